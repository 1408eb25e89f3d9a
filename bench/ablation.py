"""Compare training checkpoints at equal steps: BD-rate of each against the first, on Kodak.

    python -m bench.ablation runs/abl_ctx_none/last.pt runs/abl_ctx_checkerboard/last.pt [--limit 8]

Architecture choices are decided by ablations at equal training steps (docs/training.md), often for
models that cannot be exported yet (a context model before its integer path exists). So this uses
the training model itself: for every quality level 0..7 and every image, the exact-rounding rate
under the float prior and the PSNR of the decoded image (``training.loop.validate``, the numbers
the training log shows), averaged per level, then BD-rate (PSNR, piecewise cubic) of each checkpoint
against the first. A checkpoint trained on one level only (``python -m training --only-level``, a
single-rate model) is measured at that level, and its one point is compared with the rate the first
checkpoint's curve needs for the same PSNR. The rate is the ideal code length, not a file size:
exporting adds the integer prior's small cost on top (``bench/results/prior_cost.md``), the same
for every candidate.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from bench.bdrate import bd_rate, overlap, point_vs_curve
from bench.common import DEFAULT_DATA, environment
from training.data import load_folder
from training.loop import validate
from training.model import load_checkpoint


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpts", type=Path, nargs="+", help="checkpoints; the first is the anchor")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA / "kodak")
    p.add_argument("--limit", type=int, default=8, help="first N images of --data")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = load_folder(args.data, limit=args.limit)
    print("\n".join(environment("cpu", args.threads)) + "\n")
    curves = {}
    for path in args.ckpts:
        model, ckpt = load_checkpoint(path)
        step, only = ckpt["step"], (ckpt.get("args") or {}).get("only_level")
        levels = [only] if only is not None else list(range(len(model.config.lambdas)))
        rows = validate(model, images, levels)
        curves[path] = ([r["bpp"] for r in rows], [r["psnr"] for r in rows])
        points = ", ".join(f"{r['bpp']:.3f}/{r['psnr']:.2f}" for r in rows)
        trained = f"level {only} only" if only is not None else "all levels"
        print(f"{path} (step {step}, context {model.config.context}, {trained}): bpp/dB per level "
              f"{levels[0]}..{levels[-1]}: {points}", flush=True)
    anchor = curves[args.ckpts[0]]
    print(f"\n| checkpoint | BD-rate vs {args.ckpts[0]} | PSNR range |\n|---|---|---|")
    for path in args.ckpts[1:]:
        if len(curves[path][0]) == 1:  # a single-rate model: its one point against the anchor's curve
            diff = point_vs_curve(*anchor, curves[path][0][0], curves[path][1][0])
            shown = f"{diff:+.1f} % (one point)" if diff == diff else "outside the curve's PSNR range"
            print(f"| {path} | {shown} | {curves[path][1][0]:.2f} dB |")
            continue
        span = overlap(*anchor, *curves[path])
        bd = f"{bd_rate(*anchor, *curves[path]):+.1f} %" if span else "no overlap"
        rng = f"{span[0]:.1f}-{span[1]:.1f} dB" if span else "-"
        print(f"| {path} | {bd} | {rng} |")


if __name__ == "__main__":
    main()
