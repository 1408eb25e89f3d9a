"""What a leaner prior costs the grown model (M = 320), at equal steps on a small scale.

    python -m bench.prior_width --steps 150

Two runs of the same short fine-tune from the shipped model grown to M = 320 (``--grow-m``, so both
start as the same function): one with the prior's widths as ``vaecodec.prior`` derives them from M
(h_s hidden 320 and 480, the context's 5x5 convolution to 320 features and 1x1 layers of 640), one
lean (h_s hidden kept at the shipped model's 192 and 288, context features 192, 1x1 layers 384).
The lean widths are patched into the training twins in this process only: the runtime builds its
integer networks from M alone. Printed: the parameters and float16 weights of each, the mean
training loss of the last 50 steps, and validation (4 Kodak images, float prior) at the end.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from unittest import mock

from training import prior
from training.__main__ import main as train
from training.model import ModelConfig, VAEModel

LEAN_HS = (192, 288)
LEAN_CTX = (192, 384)


def lean_hs_layers(n: int, m: int) -> list[tuple[str, int, int, int, int]]:
    h1, h2 = LEAN_HS
    return [("deconv", n, h1, 5, 2), ("deconv", h1, h2, 5, 2), ("conv", h2, 2 * m, 3, 1)]


def lean_ctx_layers(m: int) -> list[tuple[str, int, int, int, int]]:
    f, h = LEAN_CTX
    return [("conv", m, f, 5, 1), ("conv", f + 2 * m, h, 1, 1), ("conv", h, h, 1, 1),
            ("conv", h, 2 * m, 1, 1)]


def arm(name: str, run: Path, flags: list[str]) -> None:
    patches = [] if name == "formula" else [mock.patch.object(prior, "hs_layers", lean_hs_layers),
                                            mock.patch.object(prior, "ctx_layers", lean_ctx_layers)]
    for p in patches:
        p.start()
    try:
        model = VAEModel(ModelConfig(n=128, m=320, context="checkerboard", postfilter=16))
        params = sum(p.numel() for p in model.parameters())
        train(["--run-dir", str(run), *flags])
    finally:
        for p in patches:
            p.stop()
    with (run / "train_log.csv").open() as f:
        rows = list(csv.DictReader(f))
    last = [float(r["loss"]) for r in rows if int(r["step"]) > int(rows[-1]["step"]) - 50]
    with (run / "val_log.csv").open() as f:
        val = [f"level {r['level']}: {float(r['bpp']):.4f} bpp, {float(r['psnr']):.2f} dB"
               for r in csv.DictReader(f)]
    print(f"| {name} | {params / 1e6:.2f} M | {2 * params / 1e6:.1f} MB | {sum(last) / len(last):.4f} | "
          f"{'; '.join(val)} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--out", type=Path, default=Path("runs/prior_width"))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    flags = ["--init", "hp128cbpf-v5", "--grow-m", "320", "--steps", str(args.steps), "--batch", "8",
             "--crop", "128", "--lr", "1e-4", "--warmup", "20", "--log-every", "25", "--ckpt-every",
             str(args.steps), "--val-every", str(args.steps), "--val-images", "4", "--threads",
             str(args.threads), "--seed", "5"]
    print("| prior | parameters | float16 | training loss, last 50 steps | validation at the end |")
    print("|---|---|---|---|---|")
    for name in ("formula", "lean"):
        arm(name, args.out / name, flags)


if __name__ == "__main__":
    main()
