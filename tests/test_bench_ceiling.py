"""bench.ceiling's unquantized decode: the same transforms without rounding must beat the file."""

from __future__ import annotations

import numpy as np

from bench.ceiling import unquantized_rgb
from bench.metrics import psnr
from vaecodec import image


def test_unquantized_decode_beats_the_coded_one_at_low_quality(codec, make_image) -> None:
    # At quality 1 rounding throws away most of y (Kodak: 7 dB between the two); a decode that lost
    # the gains (measured: 25.8 dB), the post-filter or the crop falls below the file instead.
    rgb = make_image(128, 96, seed=5)
    pic = image.load(rgb)
    coded = np.asarray(codec.decompress(codec.compress(rgb, quality=1, wiener=False)))
    unquantized = unquantized_rgb(codec, pic, 1.0)
    assert unquantized.shape == rgb.shape and unquantized.dtype == np.uint8
    assert psnr(unquantized, rgb) > psnr(coded, rgb) + 2.0  # measured: 31.9 against 26.8 dB
