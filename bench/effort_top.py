"""Can the effort search extend the top of today's model? Qualities above 10, at effort >= 1.

    python -m bench.effort_top --limit 6 --qualities 10,11,12 --efforts 1,2

A quality above 10 names a level above the top trained one (level 7, lambda 0.1). The codec clamps
such levels; this bench extrapolates them instead, as the codec already does below level 0
(:class:`vaecodec.quality.QualityScale`: every channel's log-gain moves by the mean step per level,
and lambda follows its geometric ladder, 0.18 at quality 11), and lets the effort search (which
optimizes ``lambda * 255^2 * MSE + bits`` against the fixed decoder, ``vaecodec.refine``) spend the
bits. It patches, inside this process only, the quality range check and the clamp, then compresses
and decompresses with the public API: real files, the Wiener filter included.

Each image is compared with JPEG 2000 (the measured figures of ``../shared/reference``, the
same images) at the same bpp, its PSNR interpolated linearly in log(bpp) between the two
reference points around it (extrapolated along the last segment above 2 bpp, where the reference
stops); the table gives the mean over the images. Writing the result to
``bench/results/effort_top.md`` decides whether qualities above 10 ship.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from bench.common import DEFAULT_DATA, environment, image_files
from bench.metrics import psnr
from vaecodec import Codec, codec, container, image, quality
from vaecodec.quality import QualityScale

REFERENCE = DEFAULT_DATA.parent / "reference" / "kodak_conventional_measured.csv"
TOP = 14.0  # the highest quality the patched range allows


def _extrapolating(self: QualityScale, log_table, level):  # noqa: ANN001, ANN202
    """QualityScale.interpolate, continued above the top level by the mean step per level (the
    rule the codec uses below level 0)."""
    top = self.levels - 1
    slope = (log_table[-1] - log_table[0]).mean() / top
    inside = _ORIGINAL(self, log_table, level.clamp(max=top))
    return inside * ((level - top).clamp(min=0)[:, None] * slope).exp()


_ORIGINAL = QualityScale.interpolate


def extended_top() -> ExitStack:
    """Qualities up to TOP accepted and their levels extrapolated, in this process."""
    stack = ExitStack()
    check = lambda q: round(float(q), quality.QUALITY_DECIMALS)  # noqa: E731
    stack.enter_context(mock.patch.object(QualityScale, "interpolate", _extrapolating))
    stack.enter_context(mock.patch.object(codec, "check_quality", check))
    stack.enter_context(mock.patch.object(container, "QUALITY_MAX", TOP))
    return stack


def jpeg2000(path: Path = REFERENCE) -> dict[str, list[tuple[float, float]]]:
    """Per image, JPEG 2000's (bpp, PSNR) points, by bpp."""
    points: dict[str, list[tuple[float, float]]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            if row["codec"] == "jpeg2000":
                points.setdefault(row["image"], []).append((float(row["bpp"]), float(row["psnr_rgb"])))
    return {k: sorted(v) for k, v in points.items()}


def psnr_at(points: list[tuple[float, float]], bpp: float) -> float:
    """PSNR of a curve at ``bpp``, linear in log(bpp) between the points around it (beyond the last
    point, along the last segment: the reference stops at 2 bpp)."""
    segments = list(zip(points[:-1], points[1:], strict=True))
    (b0, p0), (b1, p1) = next((s for s in segments if s[0][0] <= bpp <= s[1][0]), segments[-1])
    return p0 + (math.log(bpp) - math.log(b0)) / (math.log(b1) - math.log(b0)) * (p1 - p0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA / "kodak")
    p.add_argument("--qualities", default="10,11,12")
    p.add_argument("--efforts", default="1")
    p.add_argument("--limit", type=int, default=6, help="first N images of --data")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ref = jpeg2000()
    files = image_files(args.data, args.limit)
    pics = [image.load(f) for f in files]
    vc = Codec(device="cpu")
    print("\n".join(environment("cpu", args.threads)))
    print(f"- model: {vc.model.name}; {len(pics)} images of {args.data}; JPEG 2000 from {REFERENCE.name}\n")
    print("| quality | lambda | effort | bpp | PSNR (dB) | JPEG 2000 at the same bpp (dB) | difference (dB) "
          "| encode s/image |")
    print("|---|---|---|---|---|---|---|---|")
    with extended_top():
        for q in [float(v) for v in args.qualities.split(",")]:
            lam = float(vc.model.gains.lambda_at(torch.tensor([quality.level_of(q)])))
            for effort in [int(v) for v in args.efforts.split(",")]:
                bpp, ours, theirs, secs = [], [], [], []
                for path, pic in zip(files, pics, strict=True):
                    t = time.perf_counter()
                    data = vc.compress(pic, q, effort=effort)
                    secs.append(time.perf_counter() - t)
                    bpp.append(8 * len(data) / (pic.size[0] * pic.size[1]))
                    ours.append(psnr(np.asarray(vc.decompress(data).convert("RGB")), pic.rgb))
                    theirs.append(psnr_at(ref[path.name], bpp[-1]))
                a, b = float(np.mean(ours)), float(np.mean(theirs))
                print(f"| {q:g} | {lam:.3f} | {effort} | {np.mean(bpp):.3f} | {a:.2f} | {b:.2f} "
                      f"| {a - b:+.2f} | {np.mean(secs):.1f} |", flush=True)


if __name__ == "__main__":
    main()
