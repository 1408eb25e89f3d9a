"""The pictures of docs/latent-tools.md: a rate map, a surprise map of a corrupted photo, an
interpolation strip and samples from the prior.

    python -m bench.latent_figures            # -> docs/latent-*.png

Kodak images (never trained on) at the quality each figure names; the PNGs are reduced to 256
colours so that they stay small in the repository.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.common import DEFAULT_DATA, ROOT, load_rgb
from bench.corruptions import patch_of_noise
from vaecodec import Codec
from vaecodec.latent_tools import Calibration, analysis, heat_map, interpolate, sample, strip, surprise


def save(img: Image.Image, path: Path, scale: float = 1.0) -> None:
    if scale != 1.0:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
    img.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)
    print(f"{path}: {img.width}x{img.height}, {path.stat().st_size} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "kodak")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    torch.set_num_threads(2)
    codec = Codec(device="cpu")
    kodak = {i: load_rgb(args.data / f"kodim{i:02d}.png") for i in (5, 15, 20, 23)}

    save(analysis(codec, kodak[23], 7, wiener=False).picture(), args.out / "latent-rate-map.png", 0.6)

    cal = Calibration.of(codec)
    corrupted, _box = patch_of_noise(kodak[20], list(kodak.values()), 20)
    s = surprise(codec, corrupted, cal)
    picture = heat_map(np.asarray(corrupted), s.blocks, -2.0, max(2.0, float(s.blocks.max())),
                       "surprise (sd)")
    save(picture, args.out / "latent-surprise-map.png", 0.6)

    a = kodak[23].crop((200, 60, 392, 252))
    b = kodak[15].crop((250, 150, 442, 342))
    frames = interpolate(codec, a, b, [k / 5 for k in range(6)], 7)
    save(strip(frames), args.out / "latent-interpolation.png")

    save(strip([sample(codec, (192, 192), seed, 7) for seed in range(4)]), args.out / "latent-samples.png")


if __name__ == "__main__":
    main()
