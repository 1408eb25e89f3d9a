"""The training loop: one script, top to bottom, on one CPU, one GPU or many (torchrun + DDP).

Data (:mod:`training.data`: random crops, random downscaling, flips, all photos held in memory),
model (:class:`training.model.VAEModel`), Adam with warm-up and cosine decay, gradient clipping, an
optional EMA of the weights, periodic validation written to a CSV, and atomic checkpoints that hold
everything needed to resume exactly (model, EMA, optimizer, step and every rank's random states).
Each training sample gets a random, continuous quality level, so one run trains the whole quality
knob.

On CUDA the transforms run in bfloat16 autocast with ``channels_last`` (``--no-bf16`` to disable);
the prior and the rate stay in float32 (see :meth:`training.model.VAEModel.forward`). Under torchrun
every process trains on its own crops (``--batch`` per process, so the global batch is ``--batch`` x
processes; the learning rate is not rescaled) and DDP averages the gradients; rank 0 logs, validates
and checkpoints. The backend is NCCL on GPUs and gloo on CPUs (what the tests run with two
processes).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel

from vaecodec import weights
from vaecodec.errors import VaecodecError
from vaecodec.files import write_atomic
from vaecodec.quality import MIN_LEVEL
from vaecodec.transforms import pad

from .data import CropSampler, load_folder
from .export import init_from_weights
from .grow import grow_latent, relambda
from .model import ModelConfig, VAEModel

CHECKPOINT = "last.pt"
FREEZABLE = ("g_a", "g_s", "h_a", "h_s", "context", "z_density", "gains", "post")
RATE_PARTS = ("g_a", "h_a", "h_s", "context", "z_density", "gains")  # what --loss psnr must freeze


def save(obj: dict, path: Path) -> None:
    """torch.save through the runtime's atomic writer: an interrupted save leaves the last good
    checkpoint in place, never a partial one."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: torch.save(obj, f), force=True)


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
    """Exact-rounding rate (float prior) and PSNR on whole images, per level, in float32. Images are
    padded as the codec pads them (:func:`vaecodec.transforms.pad`); the rate counts the padding,
    spread over the image's own pixels."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rows = []
    for level in levels:
        bpp, psnr = [], []
        for img in images:
            x = torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None].to(device)
            h, w = x.shape[2:]
            padded = pad(x)
            out = model(padded, torch.tensor([level * 1.0], device=device))
            x_hat = out["x_hat"][..., :h, :w].clamp(0, 1)
            mse = float((torch.round(x_hat * 255) - torch.round(x * 255)).square().mean())
            bpp.append(float(out["bpp_y"] + out["bpp_z"]) * padded.shape[2] * padded.shape[3] / (h * w))
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


def freeze(model: VAEModel, parts: list[str]) -> list[str]:
    """Stop training these parts of the model (sorted names, as checkpoints record them).

    A frozen part keeps its values to the bit (the optimizer never sees it, and the EMA of a constant
    is that constant), so a fine-tune exports exactly the frozen parts it started from: with h_s
    and the context frozen the prior's integer networks stay those of the model it started from, and
    with the z density frozen a run started from a weights file keeps that file's z tables
    (:mod:`training.export`). ``--loss psnr`` relies on it to leave the rate alone."""
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


def load_init(src: str) -> dict:
    """The checkpoint ``--init`` names: a training checkpoint (or ``--slim`` copy), or one rebuilt
    from a weights file or a shipped model's name (:func:`training.export.init_from_weights`)."""
    if src in weights.shipped() or Path(src).suffix == weights.SUFFIX:
        try:
            return init_from_weights(src)
        except VaecodecError as exc:
            raise SystemExit(f"error: {exc}") from None
    return torch.load(src, map_location="cpu", weights_only=False)


def build_model(args: argparse.Namespace, ckpt: dict | None, step: int) -> VAEModel:
    """The model a run trains: new, resumed, or started from ``--init``'s weights. A context model
    or post-filter asked for that the ``--init`` model lacks is added, starting as the identity (the
    last layer of each starts at zero), so training starts from that model's own numbers."""
    if ckpt is None:
        lambdas = {"lambdas": args.lambdas} if args.lambdas else {}
        return VAEModel(ModelConfig(n=args.n, m=args.m, context=args.context, postfilter=args.postfilter,
                                    **lambdas))
    config = ckpt["config"]
    grown = {}
    if not step:
        if config.get("context", "none") == "none" and args.context != "none":
            grown["context"] = args.context
        if not config.get("postfilter") and args.postfilter:
            grown["postfilter"] = args.postfilter
    model = VAEModel(ModelConfig(**{**config, **grown}))
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=not grown)
    new_parts = tuple({"context": "context.", "postfilter": "post."}[k] for k in grown)
    if unexpected or any(not k.startswith(new_parts) for k in missing):
        raise SystemExit(f"{args.init}: weights do not fit the model ({missing + unexpected})")
    return model


def plan_steps(args: argparse.Namespace, step: int, started: float, stop: int, world: int, rank: int) -> int:
    """--budget: at step calib/2 note the clock; at step calib set ``args.steps`` so that the cosine
    schedule ends when the budget does, from the mean step time since then (compilation and cuDNN's
    search happen before it; checkpoints are left a 5 % margin). Rank 0's clock decides for all.
    Returns the new stop."""
    now = gather(time.time(), world)[0]
    if step == args.calib // 2:
        args.calib_clock = now
        return stop
    per_step = (now - args.calib_clock) / (step - args.calib // 2)
    args.steps = step + int((args.budget - (now - started)) / per_step * 0.95)
    if rank == 0:
        print(f"calibrated: {per_step:.4f} s/step; --steps {args.steps} ends the schedule at the budget "
              f"({args.budget:.0f} s)", flush=True)
    return min(args.steps, args.stop_at or args.steps)


def train(args: argparse.Namespace) -> None:
    rank, world, device = setup_process(args)
    torch.set_num_threads(args.threads)
    bf16 = device.type == "cuda" if args.bf16 is None else args.bf16
    run = Path(args.run)
    ckpt_path = run / CHECKPOINT
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
        ckpt = load_init(args.init)
        if args.grow_m:
            ckpt = grow_latent(ckpt, args.grow_m, args.seed)
        if args.lambdas:
            ckpt = relambda(ckpt, args.lambdas)
    if args.budget and step:
        raise SystemExit(f"--budget plans a fresh run; {ckpt_path} is at step {step}: resume it with --steps")
    model = build_model(args, ckpt, step)
    config = model.config
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    frozen = freeze(model, args.freeze)
    moving = [p for p in RATE_PARTS if getattr(model, p) is not None and p not in frozen]
    if args.loss == "psnr" and moving:
        raise SystemExit(f"--loss psnr leaves the rate out, so what sets it must be frozen too: "
                         f"{','.join(moving)}")
    # the z tables a model rebuilt from a weights file came with stay valid while its density is frozen
    z_tables = ckpt.get("z_tables") if ckpt and "z_density" in frozen else None
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
        kept = "; its z tables are kept (z_density frozen)" if z_tables is not None else ""
        print(f"fine-tuning the weights of {args.init} (step {ckpt['step']} there){kept}", flush=True)
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model
    if args.compile != "none":
        net = torch.compile(net, mode=args.compile)

    kodak = load_folder(data / "kodak", limit=args.val_images) if rank == 0 else []
    levels = model.gains.scale.levels
    val_levels = sorted({0, levels // 2, levels - 1})
    if rank == 0:
        print(f"model N={config.n} M={config.m}, {sum(p.numel() for p in model.parameters())} params, "
              f"{len(sampler)} training images, {world} process(es) on {device.type}, "
              f"bf16 {'on' if bf16 else 'off'}, EMA {args.ema or 'off'}", flush=True)

    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    started = t0 = time.time()
    logged = []
    if args.budget:
        args.time_limit = min(args.time_limit or args.budget, args.budget)
    stop = min(args.steps, args.stop_at or args.steps)
    while step < stop:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        x = sampler.batch(args.batch)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        level = (torch.full((args.batch,), float(args.only_level)) if args.only_level is not None else
                 sample_levels(args.batch, args.levels, MIN_LEVEL, levels - 1)).to(device)
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
        if args.budget and step in (args.calib // 2, args.calib):
            stop = plan_steps(args, step, started, stop, world, rank)
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
                save({
                    "config": config.to_dict(), "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "ema": ema.model.state_dict() if ema else None, "step": step, "rng": states,
                    "z_tables": z_tables, "args": vars(args),
                }, ckpt_path)
        # every --val-every steps, and at the last step wherever the run stops (schedule, --stop-at, time)
        if rank == 0 and (step % args.val_every == 0 or step == stop):
            for row in validate(ema.model if ema else model, kodak, val_levels):
                append_csv(run / "val_log.csv", {"step": step, **row})
                print({"val_step": step, **row}, flush=True)
    if rank == 0 and step < args.steps:
        print(f"stopped at step {step} of {args.steps}; run the same command again to resume", flush=True)
    if world > 1:
        dist.destroy_process_group()


def slim(ckpt_path: Path, out: Path) -> None:
    """The weights of a checkpoint (its EMA if it has one) as float16, with config, step and any
    z tables it carries only: small enough to copy off a time-boxed machine."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    state = ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"]
    params = {name for name, _ in VAEModel(ModelConfig(**ckpt["config"])).named_parameters()}
    half = {k: v.half() if k in params else v for k, v in state.items()}  # buffers keep precision
    save({"config": ckpt["config"], "model": half, "step": ckpt["step"], "z_tables": ckpt.get("z_tables")},
         out)
    print(f"wrote step {ckpt['step']} to {out} ({out.stat().st_size / 2**20:.1f} MiB)", flush=True)
