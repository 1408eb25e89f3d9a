"""Golden files: .vaez files made by a released model, with the integers their decoding must give.

Files are forever, so each shipped model gets golden files when it is released, and the test suite
checks that the current code still decodes them to exactly the same latent symbols, prior outputs
(integer means and scale indices) and, within float tolerance of the synthesis transform, pixels.

Make them only when a *new* model ships or a new case is added (never to paper over a change that
breaks old files); existing files are left alone:

    PYTHONPATH=. python tests/golden.py [WEIGHTS]   # writes tests/data/golden-<model>-<case>.{vaez,npz}

The first two cases of hp128cbpf-v5 were made before the Wiener filter existed, so they carry none
(``wiener`` False); the third carries one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from conftest import smooth_image

from vaecodec import Codec

DATA = Path(__file__).parent / "data"

# name -> (image maker, quality, Wiener filter): an extrapolated low quality on grey, a fractional
# one with alpha, and a high one with the per-image filter.
CASES = {
    "grey-q1.5": (lambda: smooth_image(37, 50, seed=11)[..., 1], 1.5, False),
    "rgba-q6.5": (lambda: np.dstack([smooth_image(40, 72, seed=12),
                                     np.tile(np.linspace(0, 255, 72).astype(np.uint8), (40, 1))]),
                  6.5, False),
    "rgb-q9.25-filter": (lambda: smooth_image(96, 80, seed=13), 9.25, True),
}


def main(model: str | None = None) -> None:
    torch.set_num_threads(1)
    codec = Codec(model, device="cpu")
    DATA.mkdir(exist_ok=True)
    for case, (make, quality, wiener) in CASES.items():
        vaez = DATA / f"golden-{codec.model.name}-{case}.vaez"
        if vaez.exists():
            continue
        data = codec.compress(make(), quality, wiener=wiener)
        vaez.write_bytes(data)
        pixels = np.asarray(codec.decompress(data))
        np.savez_compressed(vaez.with_suffix(".npz"), case=case, pixels=pixels,
                            **codec.decode_integers(data))
        print(f"{vaez.name}: {len(data)} bytes")


if __name__ == "__main__":
    main(*sys.argv[1:2])
