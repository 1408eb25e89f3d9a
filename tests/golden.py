"""Golden files: .vaez files made by a released model, with the integers their decoding must give.

Files are forever, so each shipped model gets golden files when it is released, and the test suite
checks that the current code still decodes them to exactly the same latent symbols, prior outputs
(integer means and scale indices) and, within float tolerance of the synthesis transform, pixels.

Regenerate only when a *new* model ships (never to paper over a change that breaks old files):

    PYTHONPATH=. python tests/golden.py [MODEL]   # writes tests/data/golden-<model>-<case>.{vaez,npz}
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from conftest import smooth_image

from vaecodec import Codec

DATA = Path(__file__).parent / "data"

# name -> (image maker, quality): an extrapolated low quality on grey, a fractional one with alpha.
CASES = {
    "grey-q1.5": (lambda: smooth_image(37, 50, seed=11)[..., 1], 1.5),
    "rgba-q6.5": (lambda: np.dstack([smooth_image(40, 72, seed=12),
                                     np.tile(np.linspace(0, 255, 72).astype(np.uint8), (40, 1))]), 6.5),
}


def main(model: str | None = None) -> None:
    torch.set_num_threads(1)
    codec = Codec(model, device="cpu")
    DATA.mkdir(exist_ok=True)
    for case, (make, quality) in CASES.items():
        data = codec.compress(make(), quality)
        vaez = DATA / f"golden-{codec.model.name}-{case}.vaez"
        vaez.write_bytes(data)
        pixels = np.asarray(codec.decompress(data))
        np.savez_compressed(vaez.with_suffix(".npz"), case=case, pixels=pixels,
                            **codec.decode_integers(data))
        print(f"{vaez.name}: {len(data)} bytes")


if __name__ == "__main__":
    main(*sys.argv[1:2])
