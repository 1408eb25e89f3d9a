"""Train a vaecodec model, resumably, on one CPU, one GPU or many (torchrun + DDP), and export it.

    python -m vaecodec.train --run-dir runs/hp --steps 20000           # train (resumes if runs/hp exists)
    torchrun --nproc_per_node 8 -m vaecodec.train --run-dir runs/hp    # the same on 8 GPUs (or CPU procs)
    python -m vaecodec.train --run-dir runs/hp --export weights/NAME.pt  # export the latest checkpoint

One script, top to bottom: data (random crops, random downscaling, flips, all sources held in memory),
model, Adam with warm-up and cosine decay, gradient clipping, an optional EMA of the weights, periodic
Kodak validation written to a CSV, and atomic checkpoints that hold everything needed to resume
exactly (model, EMA, optimizer, step and every rank's random states). Each training sample gets a
random, continuous quality level, so one run trains the whole quality knob.

On CUDA the transforms run in bfloat16 autocast with ``channels_last`` (``--no-bf16`` to disable);
the prior and the rate stay in float32 (see :meth:`vaecodec.model.VAEModel.forward`). Under torchrun
every process trains on its own crops (``--batch`` per process, so the global batch is ``--batch`` x
processes; the learning rate is not rescaled) and DDP averages the gradients; rank 0 logs, validates
and checkpoints. The backend is NCCL on GPUs and gloo on CPUs (what CI tests with two processes).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel

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
    """Exact-rounding rate (float prior) and PSNR on whole images, per level, in float32."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rows = []
    for level in levels:
        bpp, psnr = [], []
        for img in images:
            x = torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None].to(device)
            h, w = x.shape[2:]
            pad = (0, (-w) % 64, 0, (-h) % 64)
            out = model(torch.nn.functional.pad(x, pad, mode="replicate"),
                        torch.tensor([level * 1.0], device=device))
            x_hat = out["x_hat"][..., :h, :w].clamp(0, 1)
            mse = float((torch.round(x_hat * 255) - torch.round(x * 255)).square().mean())
            bpp.append(float(out["bpp_y"] + out["bpp_z"]) * (x.shape[2] + pad[3]) * (w + pad[1]) / (h * w))
            psnr.append(10 * math.log10(255**2 / max(mse, 1e-10)))
        rows.append({"level": level, "bpp": float(np.mean(bpp)), "psnr": float(np.mean(psnr))})
    model.train(was_training)
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


class EMA:
    """Exponential moving average of the weights, with the usual warm-up of the decay
    (``min(decay, (1 + step) / (10 + step))``) so that early averages are not dominated by the
    random initialisation."""

    def __init__(self, model: VAEModel, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: VAEModel, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for avg, new in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
            if avg.is_floating_point():
                avg.lerp_(new, 1 - d)
            else:
                avg.copy_(new)


def rng_state() -> dict:
    """This process's random states (numpy's is the crop sampler's, kept in ``CropSampler.rng``)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def setup_process(args: argparse.Namespace) -> tuple[int, int, torch.device]:
    """(rank, world size, device); joins the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo")
    return rank, world, device


def gather(obj: object, world: int) -> list:
    """Every rank's ``obj`` (a list of one without DDP)."""
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def train(args: argparse.Namespace) -> None:
    rank, world, device = setup_process(args)
    torch.set_num_threads(args.threads)
    bf16 = device.type == "cuda" if args.bf16 is None else args.bf16
    run = Path(args.run)
    ckpt_path = run / "last.pt"
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)

    # Every rank draws its own crops, noise and levels: seeded by (seed, rank).
    rng = np.random.default_rng([args.seed, rank])
    torch.manual_seed(args.seed * 1000 + rank)
    random.seed(args.seed * 1000 + rank)
    ckpt, step = None, 0
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        step = ckpt["step"]
    elif args.init:
        ckpt = torch.load(args.init, map_location="cpu", weights_only=False)
    config = ModelConfig(**ckpt["config"]) if ckpt else ModelConfig(n=args.n, m=args.m)
    model = VAEModel(config)
    if ckpt:
        model.load_state_dict(ckpt["model"])
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    ema = EMA(model, args.ema) if args.ema else None
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    if ckpt and step:  # resuming this run: everything, exactly
        opt.load_state_dict(ckpt["optimizer"])
        if ema and "ema" in ckpt:
            ema.model.load_state_dict(ckpt["ema"])
        states = ckpt.get("rng") or [{"numpy": ckpt["numpy_rng"], "torch": ckpt["torch_rng"],
                                      "python": ckpt["python_rng"]}]  # single-process checkpoints
        if len(states) == world:
            rng.bit_generator.state = states[rank]["numpy"]
            set_rng_state(states[rank])
        elif rank == 0:
            print(f"warning: checkpoint has {len(states)} processes' random states, this run {world}; "
                  "continuing with fresh seeds (not an exact resume)", flush=True)
        if rank == 0:
            print(f"resumed from {ckpt_path} at step {step}", flush=True)
    elif ckpt and rank == 0:
        print(f"fine-tuning the weights of {args.init} (step {ckpt['step']} there)", flush=True)
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model

    data = Path(args.data)
    sampler = CropSampler(load_folder(data / "train"), args.crop, rng)
    kodak = load_folder(data / "kodak", limit=args.val_images) if rank == 0 else []
    levels = config.lambdas
    val_levels = sorted({0, len(levels) // 2, len(levels) - 1})
    if rank == 0:
        print(f"model N={config.n} M={config.m}, {sum(p.numel() for p in model.parameters())} params, "
              f"{len(sampler.images)} training images, {world} process(es) on {device.type}, "
              f"bf16 {'on' if bf16 else 'off'}, EMA {args.ema or 'off'}", flush=True)

    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    started = t0 = time.time()
    logged = []
    stop = min(args.steps, args.stop_at or args.steps)
    while step < stop:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        x = sampler.batch(args.batch).to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        # Continuous levels, including the extrapolated ones below 0 that qualities 1..2 use, so
        # every point of the quality knob is trained, not only the 8 anchors.
        level = torch.empty(args.batch).uniform_(model.gains.MIN_LEVEL, len(levels) - 1).to(device)
        with autocast():
            out = net(x, level)
        loss = model.rd_loss(out, level)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        if ema:
            ema.update(model, step)
        step += 1
        logged.append((loss.item(), (out["bpp_y"] + out["bpp_z"]).mean().item(), out["mse"].mean().item()))
        if step % args.log_every == 0 and rank == 0:
            loss_m, bpp_m, mse_m = np.mean(logged, axis=0)
            row = {"step": step, "loss": f"{loss_m:.4f}", "bpp": f"{bpp_m:.4f}", "mse": f"{mse_m:.6f}",
                   "lr": f"{opt.param_groups[0]['lr']:.2e}",
                   "s_per_step": f"{(time.time() - t0) / len(logged):.3f}"}
            append_csv(run / "train_log.csv", row)
            print(row, flush=True)
            t0, logged = time.time(), []
        # --time-limit: every rank must agree to stop, so rank 0's clock decides for all
        out_of_time = args.time_limit and gather(time.time() - started > args.time_limit, world)[0]
        if out_of_time or step == stop:
            stop = step
        if step % args.ckpt_every == 0 or step == stop:
            states = gather({"numpy": rng.bit_generator.state, **rng_state()}, world)
            if rank == 0:
                save_atomic({
                    "config": config.to_dict(), "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "ema": ema.model.state_dict() if ema else None, "step": step, "rng": states,
                    "args": vars(args),
                }, ckpt_path)
        if rank == 0 and (step % args.val_every == 0 or step == args.steps):
            for row in validate(ema.model if ema else model, kodak, val_levels):
                append_csv(run / "val_log.csv", {"step": step, **row})
                print({"val_step": step, **row}, flush=True)
    if rank == 0 and step < args.steps:
        print(f"stopped at step {step} of {args.steps}; run the same command again to resume", flush=True)
    if world > 1:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", dest="run", required=True,
                   help="run folder: checkpoints and logs (resumed if present)")
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
    p.add_argument("--N", dest="n", type=int, default=64, help="channels of g_a/g_s hidden layers and of z")
    p.add_argument("--M", dest="m", type=int, default=128, help="channels of y")
    p.add_argument("--stop-at", type=int, metavar="STEP",
                   help="checkpoint and stop at this step, keeping the schedule of --steps (resume later)")
    p.add_argument("--time-limit", type=float, metavar="SECONDS",
                   help="checkpoint and stop after this much training time (for time-boxed machines)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads per process")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bfloat16 autocast for the transforms (default: on with CUDA, off on the CPU)")
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="keep an EMA of the weights with this decay (e.g. 0.999), validated and exported "
                        "instead of the raw weights; 0 = off")
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
