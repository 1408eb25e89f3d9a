"""``python -m training``: train a vaecodec model, resumably, and export it (see training/__init__.py).

    python -m training --run-dir runs/hp --steps 20000                  # train (resumes if runs/hp exists)
    torchrun --nproc_per_node 8 -m training --run-dir runs/hp           # the same on 8 GPUs (or CPU procs)
    python -m training --run-dir runs/hp --export runs/hp.safetensors   # export the latest checkpoint

The loop is training/loop.py; the runs that made the shipped weights are in docs/training.md.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from vaecodec.weights import SUFFIX

from .data import pack
from .export import export_checkpoint
from .loop import CHECKPOINT, FREEZABLE, slim, train

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"  # <repo>/../shared/data


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", dest="run",
                   help="run folder: checkpoints and logs (resumed if present)")
    p.add_argument("--data", default=os.environ.get("VAECODEC_DATA", str(DEFAULT_DATA)),
                   help="folder holding train/ and kodak/ (default $VAECODEC_DATA, else ../shared/data "
                        "beside the checkout)")
    p.add_argument("--export", metavar="WEIGHTS", type=Path,
                   help=f"export the run's checkpoint to this weights file (*{SUFFIX})")
    p.add_argument("--slim", metavar="FILE", type=Path,
                   help="write the run's latest weights (the EMA if kept) in float16, without optimizer "
                        "state, to FILE: small enough to copy off a time-boxed machine; --init and "
                        "--export accept it")
    p.add_argument("--pack", metavar="DIR", type=Path,
                   help="write the training photos (re-encoded to fit --pack-mib) and the validation "
                        "images into DIR, to train where --data cannot reach; then --data DIR")
    p.add_argument("--pack-mib", type=float, default=50.0)
    p.add_argument("--pack-speed", type=int, default=6, choices=range(11), metavar="0..10",
                   help="libavif speed of --pack (slower fits a higher quality in the same bytes)")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--warmup", type=int, default=500, help="steps of linear learning-rate warm-up")
    p.add_argument("--init", metavar="CKPT",
                   help="start a new run from these weights (fresh optimizer and schedule): a training "
                        f"checkpoint, or a weights file (*{SUFFIX}) or shipped model's name, rebuilt into "
                        "a trainable model (training.export.init_from_weights)")
    p.add_argument("--grow-m", type=int, metavar="M",
                   help="with --init: widen the model's latent y to M channels, starting as the same "
                        "function (training/grow.py), so training starts from the --init model's quality")
    p.add_argument("--levels", choices=["continuous", "anchors"], default="continuous",
                   help="how training quality levels are drawn (see loop.sample_levels)")
    p.add_argument("--only-level", type=int, metavar="LEVEL",
                   help="train one quality level only (a single-rate model, for the ablation against "
                        "the variable-rate default in docs/training.md)")
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping")
    p.add_argument("--freeze", type=lambda v: [x for x in v.split(",") if x], default=[], metavar="PARTS",
                   help=f"comma-separated parts not to train ({', '.join(FREEZABLE)}), kept to the bit: "
                        "e.g. a fine-tune that leaves the prior as it was (h_s,context,z_density)")
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
    p.add_argument("--budget", type=float, metavar="SECONDS",
                   help="a fresh run that ends its schedule in this much time: --steps is set at step "
                        "--calib from the measured step time, and the run stops at the budget (for "
                        "time-boxed machines)")
    p.add_argument("--calib", type=int, default=300,
                   help="with --budget: the step at which --steps is set (the time of the second half of the "
                        "steps before it is measured: compilation and warm-up left out); keep it within "
                        "--warmup, where the schedule does not depend on --steps")
    p.add_argument("--compile", choices=["none", "default", "reduce-overhead", "max-autotune-no-cudagraphs"],
                   default="none", help="torch.compile the training step's forward and backward in this mode "
                                        "(reduce-overhead: CUDA graphs too); checked against the eager step "
                                        "in tests/test_train_step.py")
    p.add_argument("--lambdas", type=lambda v: [float(x) for x in v.split(",")], metavar="L0,...,L7",
                   help="the levels' lambdas of a new run; with --init, each level's gains start where the "
                        "--init model's ladder puts that lambda (training/grow.py, relambda)")
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
    return p


def main(argv: list[str] | None = None) -> None:
    p = parser()
    args = p.parse_args(argv)
    if args.pack:
        pack(Path(args.data), args.pack, args.pack_mib, args.val_images, args.pack_speed)
    elif not args.run:
        p.error("--run-dir is required (except with --pack)")
    elif args.grow_m and not args.init:
        p.error("--grow-m grows the model of --init")
    elif args.export:
        if args.export.suffix != SUFFIX:
            p.error(f"--export: a weights file is named *{SUFFIX}, not {args.export.name}")
        try:
            export_checkpoint(Path(args.run) / CHECKPOINT, args.export)
        except ValueError as exc:
            raise SystemExit(f"error: {exc}") from None
    elif args.slim:
        slim(Path(args.run) / CHECKPOINT, args.slim)
    else:
        train(args)


if __name__ == "__main__":
    main()
