"""The pack's formats compared: bytes and PSNR of AVIF (4:4:4) and WebP encodings of every 10th
training photo against the lossless originals, the bytes extrapolated to all of them. What the pack
(``python -m training --pack``) can hold in the room a lent GPU's carry leaves (docs/training.md).

    python -m bench.pack_formats
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import DEFAULT_DATA, image_files
from bench.metrics import psnr

AVIF = ((6, (78, 84, 88)), (4, (84, 88)))  # (speed, qualities)
SETTINGS = [("AVIF", {"quality": q, "subsampling": "4:4:4", "speed": s}) for s, qs in AVIF for q in qs] \
    + [("WEBP", {"quality": q, "method": 6}) for q in (92, 96)]


def main(folder: Path = DEFAULT_DATA / "train") -> None:
    files = image_files(folder)
    sample = [Image.open(f).convert("RGB") for f in files[::10]]
    lossless = sum(f.stat().st_size for f in files) / 2**20
    print(f"{len(sample)} of {len(files)} photos; lossless originals {lossless:.1f} MiB\n")
    print("| format | settings | all photos (MiB, estimated) | PSNR (dB) | encode s (sample) |")
    print("|---|---|---|---|---|")
    for fmt, kw in SETTINGS:
        t, size, scores = time.perf_counter(), 0, []
        for im in sample:
            buf = io.BytesIO()
            im.save(buf, fmt, **kw)
            size += buf.tell()
            scores.append(psnr(np.asarray(Image.open(buf).convert("RGB")), np.asarray(im)))
        print(f"| {fmt} | {kw} | {size * len(files) / len(sample) / 2**20:.1f} | {np.mean(scores):.2f} "
              f"| {time.perf_counter() - t:.0f} |", flush=True)


if __name__ == "__main__":
    main()
