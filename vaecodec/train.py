"""Train a vaecodec model, resumably, on one CPU, one GPU or many (torchrun + DDP), and export it.

    python -m vaecodec.train --run-dir runs/hp --steps 20000           # train (resumes if runs/hp exists)
    torchrun --nproc_per_node 8 -m vaecodec.train --run-dir runs/hp    # the same on 8 GPUs (or CPU procs)
    python -m vaecodec.train --run-dir runs/hp --export weights/NAME.pt  # export the latest checkpoint
    python -m vaecodec.train --retire weights/OLD.pt     # make a superseded model decode-only, in place

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
import io
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import distributed as dist
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from .model import ModelConfig, VAEModel
from .weights import FILE_KIND, export_checkpoint, init_from_weights, retire_encoder, save_atomic

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def load_folder(folder: Path, limit: int | None = None) -> list[np.ndarray]:
    """All readable images of a folder as HxWx3 uint8 arrays, sorted by name for reproducibility.

    Unreadable files (the shared training set has an empty one) are skipped with a warning, so one
    bad file never stops a long run. Decoding runs on a thread pool (Pillow's decoders release the
    GIL): a packed AVIF training set takes ~30 s to decode on one core, which is device time.
    """
    exts = {".png", ".webp", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".avif"}
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in exts)[:limit]

    def read(path: Path) -> np.ndarray | None:
        try:
            return np.asarray(Image.open(path).convert("RGB"))
        except (OSError, ValueError) as exc:
            print(f"warning: skipping {path}: {exc}", flush=True)
            return None

    with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
        images = [img for img in pool.map(read, files) if img is not None]
    if not images:
        raise SystemExit(f"no readable images in {folder}")
    return images


class CropSampler:
    """Random crops of the training photos: random downscale in [0.5, 1] for half of them, flips.

    The photos live as uint8 tensors on the training device and the crops are cut, resized
    (bicubic with antialiasing, as PIL does it) and flipped there, so a GPU is never left waiting for
    a CPU data pipeline. Every random decision comes from one CPU ``torch.Generator`` whose state the
    checkpoints keep, which makes resuming exact.
    """

    def __init__(self, images: list[np.ndarray], crop: int, seed: int, device: torch.device) -> None:
        self.images = [torch.from_numpy(img.copy()).permute(2, 0, 1).to(device) for img in images]
        self.crop = crop
        self.gen = torch.Generator().manual_seed(seed)

    def _uniform(self) -> float:
        return torch.rand((), generator=self.gen).item()

    def _int(self, high: int) -> int:
        return int(torch.randint(high, (), generator=self.gen))

    def sample(self) -> torch.Tensor:
        """One crop, (3, crop, crop) float in [0, 1]."""
        img = self.images[self._int(len(self.images))]
        _, h, w = img.shape
        scale = 0.5 + 0.5 * self._uniform() if self._uniform() < 0.5 else 1.0
        size = min(round(self.crop / scale), h, w)
        top, left = self._int(h - size + 1), self._int(w - size + 1)
        patch = img[:, top : top + size, left : left + size].float()
        if size != self.crop:
            patch = F.interpolate(patch[None], size=(self.crop, self.crop), mode="bicubic", antialias=True,
                                  align_corners=False)[0].clamp(0, 255).round()
        flips = [d for d, p in ((2, self._uniform()), (1, self._uniform())) if p < 0.5]
        return (patch.flip(flips) if flips else patch) / 255

    def batch(self, n: int) -> torch.Tensor:
        return torch.stack([self.sample() for _ in range(n)])


def slim(ckpt_path: Path, out: Path) -> None:
    """The weights of a checkpoint (its EMA if it has one) as float16, with config and step only."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    weights = ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"]
    params = {name for name, _ in VAEModel(ModelConfig(**ckpt["config"])).named_parameters()}
    half = {k: v.half() if k in params else v for k, v in weights.items()}  # buffers keep precision
    save_atomic({"config": ckpt["config"], "model": half, "step": ckpt["step"]}, out)
    print(f"wrote step {ckpt['step']} to {out} ({out.stat().st_size / 2**20:.1f} MiB)", flush=True)


def pack(data: Path, out: Path, budget_mib: float, val_images: int) -> None:
    """Copy the training photos, re-encoded to fit ``budget_mib``, and the validation images into
    ``out`` (``train/``, ``kodak/``), for machines the shared data cannot reach (a device lent for
    a few minutes takes at most 64 MiB with it, code and weights included).

    The photos become AVIF 4:4:4 at the highest quality whose total fits. AVIF, not JPEG: the
    training targets are these re-encoded photos, so their error is a ceiling on what the high
    quality levels can learn. On this training set JPEG 4:4:4 at 26 MiB is quality 59, 31.4 dB
    against the originals (quality 86, 35.7 dB, took 52 MiB), while AVIF at 38 MiB gives 37.4 dB.
    4:4:4 because 4:2:0 would teach the codec that colour carries no detail.
    """
    exts = {".png", ".webp", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
    files = sorted(p for p in (data / "train").iterdir() if p.suffix.lower() in exts)
    photos = {}
    for path in files:
        try:
            photos[path.stem] = Image.open(path).convert("RGB")
        except (OSError, ValueError) as exc:
            print(f"warning: skipping {path}: {exc}", flush=True)

    def encode(name: str, quality: int) -> bytes:
        buf = io.BytesIO()
        photos[name].save(buf, "AVIF", quality=quality, subsampling="4:4:4", speed=6)
        return buf.getvalue()

    def encoded(quality: int, names: list[str]) -> dict[str, bytes]:
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            return dict(zip(names, pool.map(lambda n: encode(n, quality), names), strict=True))

    budget, names = budget_mib * 2**20, sorted(photos)
    for quality in range(95, 9, -2):
        sample = encoded(quality, names[::10])
        if sum(map(len, sample.values())) * len(names) / len(sample) > 0.98 * budget:
            continue  # the estimate from every 10th photo already misses the budget
        blobs = encoded(quality, names)
        if sum(map(len, blobs.values())) <= budget:
            break
    else:
        raise SystemExit(f"{len(names)} photos do not fit {budget_mib} MiB even at AVIF quality 11")
    (out / "train").mkdir(parents=True, exist_ok=True)
    for name, blob in blobs.items():
        (out / "train" / f"{name}.avif").write_bytes(blob)
    (out / "kodak").mkdir(exist_ok=True)
    for path in sorted((data / "kodak").glob("*.png"))[:val_images]:
        (out / "kodak" / path.name).write_bytes(path.read_bytes())
    total = sum(map(len, blobs.values())) / 2**20
    print(f"packed {len(blobs)} photos as AVIF 4:4:4 quality {quality} ({total:.1f} MiB) and "
          f"{val_images} validation images into {out}", flush=True)


def sample_levels(n: int, how: str, lowest: float, highest: int) -> torch.Tensor:
    """Quality levels of a batch. "continuous": uniform over [lowest, highest], the extrapolated
    levels below 0 that qualities 1..2 use included, so every point of the knob is trained.
    "anchors": uniform over the integer levels only (the first run's sampling, plus those below 0)."""
    if how == "continuous":
        return torch.empty(n).uniform_(lowest, highest)
    return torch.randint(math.ceil(lowest), highest + 1, (n,)).float()


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
        """One multi-tensor lerp for all floating tensors: a kernel per tensor would add a few
        hundred launches to a GPU step that is bound by launches, not arithmetic."""
        d = min(self.decay, (1 + step) / (10 + step))
        pairs = list(zip(self.model.state_dict().values(), model.state_dict().values(), strict=True))
        floats = [(avg, new) for avg, new in pairs if avg.is_floating_point()]
        torch._foreach_lerp_([a for a, _ in floats], [n for _, n in floats], 1 - d)
        for avg, new in pairs:
            if not avg.is_floating_point():
                avg.copy_(new)


FREEZABLE = ("g_a", "g_s", "h_a", "h_s", "context", "z_density", "gains", "post")
RATE_PARTS = ("g_a", "h_a", "h_s", "context", "z_density", "gains")  # what --loss psnr must freeze


def freeze(model: VAEModel, parts: list[str]) -> list[str]:
    """Stop training these parts of the model (sorted names, as checkpoints record them).

    A frozen part keeps its values to the bit (the optimizer never sees it, and the EMA of a constant
    is that constant), so a fine-tune of a shipped model with h_s and the context frozen
    (``--init weights/OLD.pt --freeze h_s,context``) exports the same integer networks as OLD, and
    OLD, once retired, can borrow them from the new file instead of storing them twice (weights
    budget, ``weights/README.md``)."""
    unknown = sorted(set(parts) - set(FREEZABLE))
    if unknown:
        raise SystemExit(f"--freeze: unknown part {unknown[0]!r} (parts: {', '.join(FREEZABLE)})")
    for part in parts:
        if getattr(model, part) is None:
            raise SystemExit(f"--freeze: this model has no {part}")
        getattr(model, part).requires_grad_(False)
    return sorted(parts)


def rng_state(sampler: CropSampler) -> dict:
    """This process's random states: the crop sampler's, and torch's (noise and quality levels)."""
    state = {"sampler": sampler.gen.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(sampler: CropSampler, state: dict) -> None:
    sampler.gen.set_state(state["sampler"])
    torch.set_rng_state(state["torch"])
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
        torch.backends.cudnn.benchmark = True  # the crop size is fixed, so the fastest kernels are found once
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
    torch.manual_seed(args.seed * 1000 + rank)
    data = Path(args.data)
    sampler = CropSampler(load_folder(data / "train"), args.crop, args.seed * 1000 + rank, device)
    ckpt, step = None, 0
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        step = ckpt["step"]
    elif args.init:
        ckpt = torch.load(args.init, map_location="cpu", weights_only=False)
        if isinstance(ckpt, dict) and ckpt.get("kind") == FILE_KIND:  # a shipped weights file
            try:
                ckpt = init_from_weights(Path(args.init))
            except ValueError as exc:
                raise SystemExit(f"error: {exc}") from None
    config = ModelConfig(**ckpt["config"]) if ckpt else ModelConfig(
        n=args.n, m=args.m, context=args.context, postfilter=args.postfilter)
    grown = {}  # --init from a model without a context model or post-filter asked for: add it, zero-started
    if not step and ckpt is not None:
        if config.context == "none" and args.context != "none":
            grown["context"] = args.context
        if not config.postfilter and args.postfilter:
            grown["postfilter"] = args.postfilter
        config = ModelConfig(**{**ckpt["config"], **grown})
    model = VAEModel(config)
    if ckpt:
        missing, unexpected = model.load_state_dict(ckpt["model"], strict=not grown)
        new_parts = tuple({"context": "context.", "postfilter": "post."}[k] for k in grown)
        if unexpected or any(not k.startswith(new_parts) for k in missing):
            raise SystemExit(f"{args.init}: weights do not fit the model ({missing + unexpected})")
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    frozen = freeze(model, args.freeze)
    moving = [p for p in RATE_PARTS if getattr(model, p) is not None and p not in frozen]
    if args.loss == "psnr" and moving:
        raise SystemExit(f"--loss psnr leaves the rate out, so what sets it must be frozen too: "
                         f"{','.join(moving)}")
    ema = EMA(model, args.ema) if args.ema else None
    # fused on CUDA: one kernel for the whole update (the step is launch-bound there)
    opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=args.lr,
                           fused=device.type == "cuda")
    if ckpt and step:  # resuming this run: everything, exactly
        was = sorted(ckpt.get("args", {}).get("freeze") or [])
        if was != frozen:
            raise SystemExit(f"{ckpt_path} was trained with --freeze {','.join(was)!r}, not "
                             f"{','.join(frozen)!r}: resume it with the same parts frozen")
        opt.load_state_dict(ckpt["optimizer"])
        if ema and "ema" in ckpt:
            ema.model.load_state_dict(ckpt["ema"])
        states = ckpt.get("rng") or []
        if len(states) == world and "sampler" in states[0]:
            set_rng_state(sampler, states[rank])
        elif rank == 0:
            print(f"warning: the checkpoint's random states do not fit this run ({world} processes, "
                  "or an older version); continuing with fresh seeds, not an exact resume", flush=True)
        if rank == 0:
            print(f"resumed from {ckpt_path} at step {step}", flush=True)
    elif ckpt and rank == 0:
        print(f"fine-tuning the weights of {args.init} (step {ckpt['step']} there)", flush=True)
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model

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
        x = sampler.batch(args.batch)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        level = (torch.full((args.batch,), float(args.only_level)) if args.only_level is not None else
                 sample_levels(args.batch, args.levels, model.gains.MIN_LEVEL, len(levels) - 1)).to(device)
        with autocast():
            out = net(x, level)
        loss = model.psnr_loss(out) if args.loss == "psnr" else model.rd_loss(out, level)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        if ema:
            ema.update(model, step)
        step += 1
        # kept on the device until the log line: a .item() per step would make the CPU wait for the GPU
        logged.append(torch.stack([loss.detach(), (out["bpp_y"] + out["bpp_z"]).detach().mean(),
                                   out["mse"].detach().mean()]))
        if step % args.log_every == 0:
            loss_m, bpp_m, mse_m = torch.stack(logged).mean(0).tolist()
            if not math.isfinite(loss_m):  # every rank sees its own loss, so every rank stops
                raise SystemExit(f"loss is {loss_m} at step {step}; last good checkpoint: {ckpt_path}")
            row = {"step": step, "loss": f"{loss_m:.4f}", "bpp": f"{bpp_m:.4f}", "mse": f"{mse_m:.6f}",
                   "lr": f"{opt.param_groups[0]['lr']:.2e}",
                   "s_per_step": f"{(time.time() - t0) / len(logged):.3f}"}
            if rank == 0:
                append_csv(run / "train_log.csv", row)
                print(row, flush=True)
            t0, logged = time.time(), []
        # --time-limit: every rank must agree to stop, so rank 0's clock decides for all
        out_of_time = args.time_limit and gather(time.time() - started > args.time_limit, world)[0]
        if out_of_time or step == stop:
            stop = step
        if step % args.ckpt_every == 0 or step == stop:
            states = gather(rng_state(sampler), world)
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
    p.add_argument("--run-dir", dest="run",
                   help="run folder: checkpoints and logs (resumed if present)")
    p.add_argument("--data", default=os.environ.get("VAECODEC_DATA", str(DEFAULT_DATA)),
                   help="folder holding train/ and kodak/ (default ../shared/data or $VAECODEC_DATA)")
    p.add_argument("--export", metavar="WEIGHTS", help="export the run's checkpoint to this weights file")
    p.add_argument("--planes", action="store_true",
                   help="with --export: store the tensors in zlib-compressed byte planes, a fifth smaller "
                        "for about 0.1 s more per load (weights/README.md)")
    p.add_argument("--retire", metavar="WEIGHTS", type=Path,
                   help="rewrite this weights file decode-only, in place, keeping its model id "
                        "(weights.retire_encoder): how a superseded model stays in the package")
    p.add_argument("--share-with", metavar="WEIGHTS", type=Path,
                   help="with --retire: store the tensors equal to this (neighbouring) weights file's as "
                        "borrowed from it instead of twice")
    p.add_argument("--slim", metavar="FILE", type=Path,
                   help="write the run's latest weights (the EMA if kept) in float16, without optimizer "
                        "state, to FILE: small enough to copy off a time-boxed machine; --init and "
                        "--export accept it")
    p.add_argument("--pack", metavar="DIR", type=Path,
                   help="write the training photos (re-encoded to fit --pack-mib) and the validation "
                        "images into DIR, to train where --data cannot reach; then --data DIR")
    p.add_argument("--pack-mib", type=float, default=50.0)
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--warmup", type=int, default=500, help="steps of linear learning-rate warm-up")
    p.add_argument("--init", metavar="CKPT",
                   help="start a new run from this checkpoint's weights (fresh optimizer and schedule); "
                        "a shipped weights file works too (weights.init_from_weights)")
    p.add_argument("--levels", choices=["continuous", "anchors"], default="continuous",
                   help="how training quality levels are drawn (see sample_levels)")
    p.add_argument("--only-level", type=int, metavar="LEVEL",
                   help="train one quality level only (a single-rate model, for the ablation against "
                        "the variable-rate default in docs/training.md)")
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping")
    p.add_argument("--freeze", type=lambda v: [x for x in v.split(",") if x], default=[], metavar="PARTS",
                   help=f"comma-separated parts not to train ({', '.join(FREEZABLE)}): e.g. h_s,context "
                        "to fine-tune a shipped model whose retired predecessor borrows them")
    p.add_argument("--context", choices=["none", "checkerboard"], default="none",
                   help="context model of a new run; with --init from a model without one, it is added "
                        "(starting as the identity, so training starts from the plain hyperprior)")
    p.add_argument("--loss", choices=["rd", "psnr"], default="rd",
                   help="rd: lambda * 255^2 * MSE + bpp; psnr: -PSNR averaged over the batch, for training "
                        "only what does not change the rate (model.VAEModel.psnr_loss)")
    p.add_argument("--postfilter", type=int, default=0, metavar="WIDTH",
                   help="channels of a post-filter on g_s's output (transforms.PostFilter; 0: none); with "
                        "--init from a model without one, it is added, starting as the identity")
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
    if args.pack:
        pack(Path(args.data), args.pack, args.pack_mib, args.val_images)
    elif args.retire:
        try:
            size = args.retire.stat().st_size
            model_id = retire_encoder(args.retire, args.retire, args.share_with)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"error: {exc}") from None
        lent = f", {args.share_with.stem} lends what the two share" if args.share_with else ""
        print(f"{args.retire}: decode-only, {size / 1e6:.1f} -> {args.retire.stat().st_size / 1e6:.1f} MB, "
              f"model id {model_id.hex()}{lent}")
    elif args.share_with:
        p.error("--share-with goes with --retire")
    elif args.planes and not args.export:
        p.error("--planes goes with --export")
    elif not args.run:
        p.error("--run-dir is required (except with --pack and --retire)")
    elif args.export:
        try:
            export_checkpoint(Path(args.run) / "last.pt", Path(args.export), args.planes)
        except ValueError as exc:
            raise SystemExit(f"error: {exc}") from None
    elif args.slim:
        slim(Path(args.run) / "last.pt", args.slim)
    else:
        train(args)


if __name__ == "__main__":
    main()
