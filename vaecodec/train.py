"""Train a vaecodec model, resumably, and export it to ``weights/``.

    python -m vaecodec.train --run runs/hp --steps 20000           # train (resumes if runs/hp exists)
    python -m vaecodec.train --run runs/hp --export weights/NAME.pt  # export the latest checkpoint

One script, top to bottom: data (random crops, random downscaling, flips, all sources held in memory),
model, Adam with warm-up and cosine decay, gradient clipping, periodic Kodak validation written to a
CSV, and atomic checkpoints that hold everything needed to resume exactly (model, optimizer, step and
all random states). Each training sample gets a random quality level, so one run trains every level.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .model import ModelConfig, VAEModel

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def load_folder(folder: Path, limit: int | None = None) -> list[np.ndarray]:
    """All readable images of a folder as HxWx3 uint8 arrays, sorted by name for reproducibility.

    Unreadable files (the shared training set has an empty one) are skipped with a warning, so one
    bad file never stops a long run.
    """
    exts = {".png", ".webp", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in exts)[:limit]
    images = []
    for path in files:
        try:
            images.append(np.asarray(Image.open(path).convert("RGB")))
        except (OSError, ValueError) as exc:
            print(f"warning: skipping {path}: {exc}", flush=True)
    if not images:
        raise SystemExit(f"no readable images in {folder}")
    return images


class CropSampler:
    """Random crops of the training photos: random downscale in [0.5, 1] for half of them, flips."""

    def __init__(self, images: list[np.ndarray], crop: int, rng: np.random.Generator) -> None:
        self.images, self.crop, self.rng = images, crop, rng

    def sample(self) -> np.ndarray:
        img = self.images[self.rng.integers(len(self.images))]
        h, w, _ = img.shape
        scale = self.rng.uniform(0.5, 1.0) if self.rng.random() < 0.5 else 1.0
        size = min(round(self.crop / scale), h, w)
        top, left = self.rng.integers(h - size + 1), self.rng.integers(w - size + 1)
        patch = img[top : top + size, left : left + size]
        if size != self.crop:
            resized = Image.fromarray(patch).resize((self.crop, self.crop), Image.Resampling.BICUBIC)
            patch = np.asarray(resized)
        if self.rng.random() < 0.5:
            patch = patch[:, ::-1]
        if self.rng.random() < 0.5:
            patch = patch[::-1]
        return patch

    def batch(self, n: int) -> torch.Tensor:
        arr = np.stack([self.sample() for _ in range(n)]).astype(np.float32) / 255
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def lr_at(step: int, total: int, base: float, warmup: int, final_frac: float = 0.05) -> float:
    """Linear warm-up, then cosine decay to ``final_frac * base`` at ``total`` steps."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def validate(model: VAEModel, images: list[np.ndarray], levels: list[int]) -> list[dict]:
    """Exact-rounding rate (float prior) and PSNR on whole images, per level."""
    model.eval()
    rows = []
    for level in levels:
        bpp, psnr = [], []
        for img in images:
            x = torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None]
            h, w = x.shape[2:]
            pad = (0, (-w) % 64, 0, (-h) % 64)
            out = model(torch.nn.functional.pad(x, pad, mode="replicate"), torch.tensor([level * 1.0]))
            x_hat = out["x_hat"][..., :h, :w].clamp(0, 1)
            mse = float((torch.round(x_hat * 255) - torch.round(x * 255)).square().mean())
            bpp.append(float(out["bpp_y"] + out["bpp_z"]) * (x.shape[2] + pad[3]) * (w + pad[1]) / (h * w))
            psnr.append(10 * math.log10(255**2 / max(mse, 1e-10)))
        rows.append({"level": level, "bpp": float(np.mean(bpp)), "psnr": float(np.mean(psnr))})
    model.train()
    return rows


def save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    ckpt_path = run / "last.pt"

    config = ModelConfig(n=args.n, m=args.m)
    model = VAEModel(config)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    step = 0
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False)
        config = ModelConfig(**ckpt["config"])
        model = VAEModel(config)
        model.load_state_dict(ckpt["model"])
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        opt.load_state_dict(ckpt["optimizer"])
        step = ckpt["step"]
        rng.bit_generator.state = ckpt["numpy_rng"]
        torch.set_rng_state(ckpt["torch_rng"])
        random.setstate(ckpt["python_rng"])
        print(f"resumed from {ckpt_path} at step {step}", flush=True)
    elif args.init:
        ckpt = torch.load(args.init, weights_only=False)
        config = ModelConfig(**ckpt["config"])
        model = VAEModel(config)
        model.load_state_dict(ckpt["model"])
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        print(f"fine-tuning the weights of {args.init} (step {ckpt['step']} there)", flush=True)

    data = Path(args.data)
    sampler = CropSampler(load_folder(data / "train"), args.crop, rng)
    kodak = load_folder(data / "kodak", limit=args.val_images)
    levels = config.lambdas
    val_levels = sorted({0, len(levels) // 2, len(levels) - 1})
    print(f"model N={config.n} M={config.m}, {sum(p.numel() for p in model.parameters())} params, "
          f"{len(sampler.images)} training images", flush=True)

    t0, logged = time.time(), []
    while step < args.steps:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        x = sampler.batch(args.batch)
        # Continuous levels, including the extrapolated ones below 0 that qualities 1..2 use, so
        # every point of the quality knob is trained, not only the 8 anchors.
        level = torch.empty(args.batch).uniform_(model.gains.MIN_LEVEL, len(levels) - 1)
        out = model(x, level)
        loss = model.rd_loss(out, level)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        step += 1
        logged.append((loss.item(), (out["bpp_y"] + out["bpp_z"]).mean().item(), out["mse"].mean().item()))
        if step % args.log_every == 0:
            loss_m, bpp_m, mse_m = np.mean(logged, axis=0)
            row = {"step": step, "loss": f"{loss_m:.4f}", "bpp": f"{bpp_m:.4f}", "mse": f"{mse_m:.6f}",
                   "lr": f"{opt.param_groups[0]['lr']:.2e}",
                   "s_per_step": f"{(time.time() - t0) / len(logged):.3f}"}
            append_csv(run / "train_log.csv", row)
            print(row, flush=True)
            t0, logged = time.time(), []
        if step % args.ckpt_every == 0 or step == args.steps:
            save_atomic({
                "config": config.to_dict(), "model": model.state_dict(), "optimizer": opt.state_dict(),
                "step": step, "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(), "args": vars(args),
            }, ckpt_path)
        if step % args.val_every == 0 or step == args.steps:
            for row in validate(model, kodak, val_levels):
                append_csv(run / "val_log.csv", {"step": step, **row})
                print({"val_step": step, **row}, flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run folder: checkpoints and logs (resumed if present)")
    p.add_argument("--data", default=os.environ.get("VAECODEC_DATA", str(DEFAULT_DATA)),
                   help="folder holding train/ and kodak/ (default ../shared/data or $VAECODEC_DATA)")
    p.add_argument("--export", metavar="WEIGHTS", help="export the run's checkpoint to this weights file")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--warmup", type=int, default=500, help="steps of linear learning-rate warm-up")
    p.add_argument("--init", metavar="CKPT",
                   help="start a new run from this checkpoint's weights (fresh optimizer and schedule)")
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--m", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--ckpt-every", type=int, default=250)
    p.add_argument("--val-every", type=int, default=1000)
    p.add_argument("--val-images", type=int, default=4, help="Kodak images used for validation")
    args = p.parse_args(argv)
    if args.export:
        from .weights import export_checkpoint

        export_checkpoint(Path(args.run) / "last.pt", Path(args.export))
    else:
        train(args)


if __name__ == "__main__":
    main()
