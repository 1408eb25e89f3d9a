"""How close rate control lands, and what it costs: ``--target-bpp`` and ``--target-psnr`` on Kodak.

    python -m bench.rate_control                       # all 24 Kodak images, bpp 0.5 and PSNR 33 dB
    python -m bench.rate_control --bpp 0.25,1.0 --psnr 30 --limit 6

For each target and image it compresses with the target (effort 0, Wiener filter on, as the CLI's
default), decodes, and records the real file's bpp or PSNR and the encode time; and it times one
plain encode at a fixed quality for comparison. Writes bench/results/rate_control.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import DEFAULT_DATA, ROOT, environment, image_files
from vaecodec import Codec, image
from vaecodec.rate_control import psnr


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA / "kodak")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--bpp", default="0.5", help="comma-separated bpp targets")
    p.add_argument("--psnr", default="33", help="comma-separated PSNR targets (dB)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rate_control.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    codec = Codec(device="cpu")
    pics = {f.name: image.load(f) for f in image_files(args.data, args.limit)}
    lines = [f"# Rate control on {args.data.name} ({len(pics)} images)", "",
             *environment("cpu", args.threads),
             f"- model: {codec.model.name} ({codec.model.model_id.hex()}); effort 0, Wiener filter on", ""]
    plain = []
    for pic in pics.values():
        start = time.perf_counter()
        codec.compress(pic, 7)
        plain.append(time.perf_counter() - start)
    lines += [f"A plain encode at quality 7 takes {np.mean(plain):.2f} s per image (mean).", ""]
    lines += ["| target | landed (mean) | mean error | worst above target | worst below | quality range "
              "| encode s/img (mean, max) |", "|---|---|---|---|---|---|---|"]
    for kind, values in (("bpp", args.bpp), ("psnr", args.psnr)):
        for value in (float(v) for v in values.split(",") if v):
            got, qualities, times = [], [], []
            for pic in pics.values():
                start = time.perf_counter()
                data = codec.compress(pic, **{f"target_{kind}": value})
                times.append(time.perf_counter() - start)
                qualities.append(Codec.info(data)[0].quality)
                w, h = pic.size
                if kind == "bpp":
                    got.append(8 * len(data) / (w * h))
                else:
                    got.append(psnr(np.asarray(codec.decompress(data).convert("RGB")), pic.rgb))
            got = np.array(got)
            if kind == "bpp":
                rel = (got - value) / value
                row = (f"| {value:g} bpp | {got.mean():.4f} bpp | {100 * np.abs(rel).mean():.2f} % "
                       f"| {100 * max(rel.max(), 0):.2f} % | {100 * min(rel.min(), 0):.2f} % ")
            else:
                diff = got - value
                row = (f"| {value:g} dB | {got.mean():.2f} dB | {np.abs(diff).mean():.2f} dB "
                       f"| {diff.max():+.2f} dB | {min(diff.min(), 0):+.2f} dB ")
            lines.append(row + f"| {min(qualities):g}-{max(qualities):g} | {np.mean(times):.2f}, "
                         f"{np.max(times):.2f} |")
            print(lines[-1], flush=True)
    lines += ["", "A bpp target gives the largest quality whose file fits (so the error is below the target "
              "by construction, unless no quality fits); a PSNR target the smallest quality that reaches it. "
              "\"worst above\" for PSNR is how far past the target the file went.", ""]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
