"""What a leaner prior costs the grown model (M = 320), at equal steps on a small scale.

    python -m bench.prior_width --steps 150

Two runs of the same short fine-tune from the shipped model grown to M = 320 (``--grow-m``, so both
start as the same function): one with the prior's widths as ``vaecodec.prior`` derives them from M
(h_s hidden 320 and 480, the context's 5x5 convolution to 320 features and 1x1 layers of 640), one
lean (h_s hidden kept at the shipped model's 192 and 288, context features 192, 1x1 layers 384).
The lean widths are patched into the training twins in this process only: the runtime builds its
integer networks from M alone. Both arms draw the same crops, levels and noise: the model a run
builds is random only until the grown weights replace it, and it is built here without touching the
global generator the levels and the noise come from, so the step losses pair up. Printed: the
parameters and float16 weights of each, the mean training loss of the last 50 steps, the step time,
and validation (4 Kodak images, float prior) at the end.

    python -m bench.prior_width --time

exports each arm's last checkpoint from its float16 copy (``--slim``, the path a GPU run's weights
take; the lean widths patched into the runtime too, in this process) and times the real codec on one
Kodak image: what each prior costs to encode and decode, and the size of its weights file.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import time
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import torch

import vaecodec.model
from bench.common import DEFAULT_DATA, environment
from training import loop, prior
from training.__main__ import main as train
from training.export import export_checkpoint
from training.model import ModelConfig, VAEModel
from vaecodec import Codec, image

LEAN_HS = (192, 288)
LEAN_CTX = (192, 384)


def lean_hs_layers(n: int, m: int) -> list[tuple[str, int, int, int, int]]:
    h1, h2 = LEAN_HS
    return [("deconv", n, h1, 5, 2), ("deconv", h1, h2, 5, 2), ("conv", h2, 2 * m, 3, 1)]


def lean_ctx_layers(m: int) -> list[tuple[str, int, int, int, int]]:
    f, h = LEAN_CTX
    return [("conv", m, f, 5, 1), ("conv", f + 2 * m, h, 1, 1), ("conv", h, h, 1, 1),
            ("conv", h, 2 * m, 1, 1)]


def _build_aside(args, ckpt, step):  # noqa: ANN001, ANN202
    """loop.build_model without drawing from the global generator (its random init is overwritten)."""
    with torch.random.fork_rng(devices=[]):
        return _BUILD(args, ckpt, step)


_BUILD = loop.build_model


def widths(name: str) -> ExitStack:
    """The arm's prior widths, in the training twins and the runtime, in this process."""
    stack = ExitStack()
    if name == "lean":
        for module in (prior, vaecodec.model):
            stack.enter_context(mock.patch.object(module, "hs_layers", lean_hs_layers))
            stack.enter_context(mock.patch.object(module, "ctx_layers", lean_ctx_layers))
    return stack


def arm(name: str, run: Path, flags: list[str]) -> None:
    with widths(name), mock.patch.object(loop, "build_model", _build_aside):
        model = VAEModel(ModelConfig(n=128, m=320, context="checkerboard", postfilter=16))
        params = sum(p.numel() for p in model.parameters())
        train(["--run-dir", str(run), *flags])
    with (run / "train_log.csv").open() as f:
        rows = list(csv.DictReader(f))
    last = [float(r["loss"]) for r in rows if int(r["step"]) > int(rows[-1]["step"]) - 50]
    secs = sorted(float(r["s_per_step"]) for r in rows[1:])  # the first window holds the warm-up
    with (run / "val_log.csv").open() as f:
        val = [f"level {r['level']}: {float(r['bpp']):.4f} bpp, {float(r['psnr']):.2f} dB"
               for r in csv.DictReader(f)]
    print(f"| {name} | {params / 1e6:.2f} M | {2 * params / 1e6:.1f} MB | {sum(last) / len(last):.4f} | "
          f"{secs[len(secs) // 2]:.2f} | {'; '.join(val)} |", flush=True)


def timing(out: Path, threads: int, quality: float = 7.0) -> None:
    """Median of 3 encodes and decodes of kodim01 (after one untimed) with each arm's weights."""
    torch.set_num_threads(threads)
    pic = image.load(DEFAULT_DATA / "kodak" / "kodim01.png")
    print("\n".join(environment("cpu", threads)))
    print(f"\n| prior | weights file (MB) | encode s | decode s | bytes (kodim01, quality {quality:g}) |")
    print("|---|---|---|---|---|")
    for name in ("formula", "lean"):
        with widths(name):
            path, half = out / f"{name}.safetensors", out / name / "slim.pt"
            loop.slim(out / name / loop.CHECKPOINT, half)  # float16, as a GPU run's weights come back
            export_checkpoint(half, path)
            codec = Codec(path, device="cpu")
            codec.decompress(codec.compress(pic, quality))
            enc, dec = [], []
            for _ in range(3):
                t = time.perf_counter()
                data = codec.compress(pic, quality)
                enc.append(time.perf_counter() - t)
                t = time.perf_counter()
                codec.decompress(data)
                dec.append(time.perf_counter() - t)
        print(f"| {name} | {path.stat().st_size / 1e6:.1f} | {statistics.median(enc):.3f} "
              f"| {statistics.median(dec):.3f} | {len(data)} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--out", type=Path, default=Path("runs/prior_width"),
                   help="the two runs' folder (replaced: a run left there would be resumed, not redone)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--time", action="store_true",
                   help="time the codec with each arm's exported checkpoint (after a training run)")
    args = p.parse_args(argv)
    if args.time:
        return timing(args.out, args.threads)
    flags = ["--init", "hp128cbpf-v5", "--grow-m", "320", "--steps", str(args.steps), "--batch", "8",
             "--crop", "128", "--lr", "1e-4", "--warmup", "20", "--log-every", "25", "--ckpt-every",
             str(args.steps), "--val-every", str(args.steps), "--val-images", "4", "--threads",
             str(args.threads), "--seed", "5"]
    print("| prior | parameters | float16 | training loss, last 50 steps | s/step (median) "
          "| validation at the end |")
    print("|---|---|---|---|---|---|")
    for name in ("formula", "lean"):
        shutil.rmtree(args.out / name, ignore_errors=True)
        arm(name, args.out / name, flags)


if __name__ == "__main__":
    main()
