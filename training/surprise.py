"""Calibrate the surprise scores of :mod:`vaecodec.latent_tools` on training photos and store the
statistics in a weights file, outside its model id (docs/format.md, "Weights file").

    python -m training.surprise                          # the shipped model, every 4th training photo
    python -m training.surprise --model runs/hp.safetensors --every 2

Each photo is coded whole at the reference quality (effort 0) and its
:data:`vaecodec.latent_tools.FEATURES` taken, and every block's log2 bits per pixel. Their means and
standard deviations over the photos are what scores are measured in. The model, its id and every
file it wrote are unchanged; the file is rewritten with the same tensors and the statistics added (a
new export drops them: a retrained model needs its own).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from vaecodec import Codec, weights
from vaecodec.image import IMAGE_EXTENSIONS
from vaecodec.latent_tools import (
    CALIBRATION_KEY,
    FEATURES,
    FLOOR_BPP,
    REFERENCE_QUALITY,
    WINDOW,
    Calibration,
    rate_map,
    statistics,
)

DEFAULT_DATA = Path(os.environ.get("VAECODEC_DATA", Path(__file__).resolve().parent.parent.parent / "shared"
                                   / "data"))


def calibrate(codec: Codec, photos: list[Path], source: str, quality: float = REFERENCE_QUALITY
              ) -> Calibration:
    """The statistics of natural photos at ``quality``."""
    features: dict[str, list[float]] = {k: [] for k in FEATURES}
    blocks = []
    for k, path in enumerate(photos):
        stats = statistics(rate_map(codec.encode_latents(path, quality)))
        for name in FEATURES:
            features[name].append(stats[name])
        blocks.append(stats["blocks"].ravel())
        if k % 50 == 0:
            print(f"{k + 1}/{len(photos)} {path.name}", flush=True)
    every = np.concatenate(blocks)
    return Calibration(quality, FLOOR_BPP, WINDOW,
                       {k: (float(np.mean(v)), float(np.std(v))) for k, v in features.items()},
                       (float(every.mean()), float(every.std())), len(photos), source)


def store(path: Path, calibration: Calibration) -> bytes:
    """Rewrite a weights file with the statistics among its extras; returns its (unchanged) id."""
    w = weights.read(path)
    model_id = weights.write(path, w.config, w.tensors, {**w.extras, CALIBRATION_KEY: calibration.to_json()})
    if model_id != w.model_id or weights.read(path).model_id != w.model_id:
        raise SystemExit(f"{path}: the model id changed, which must never happen")
    return model_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a weights file (default: the shipped model's)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "train", help="the training photos")
    parser.add_argument("--every", type=int, default=4, help="take every Nth photo, in name order")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = weights.resolve(args.model)
    photos = sorted(p for p in args.data.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)[:: args.every]
    source = f"every {args.every}th of the {args.data.name}/ photos in name order, whole, at their own size"
    calibration = calibrate(Codec(path, device="cpu"), photos, source)
    print(calibration.to_json())
    print(f"{path}: model {store(path, calibration).hex()}, {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
