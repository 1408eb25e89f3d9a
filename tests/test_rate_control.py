"""Rate control: the quality search meets size and PSNR targets, and says when it cannot."""

from __future__ import annotations

import numpy as np
import pytest

from vaecodec import Codec, rate_control
from vaecodec.rate_control import Target, search


def test_search_finds_the_boundary_of_a_monotone_measure():
    calls = []

    def measure(q: float) -> float:
        calls.append(q)
        return 1000 * q  # "bytes" growing with the quality

    assert search(measure, Target("bytes", 4321)) == 4.32
    assert len(calls) <= 12
    assert search(lambda q: 20 + 2 * q, Target("psnr", 33.0)) == 6.5
    assert search(lambda q: 1000 * q, Target("bytes", 10**6)) == 10.0


def test_unreachable_targets_give_the_nearest_end_with_a_warning():
    with pytest.warns(UserWarning, match="no quality reaches"):
        assert search(lambda q: 1000 * q, Target("bytes", 10)) == 1.0
    with pytest.warns(UserWarning, match="no quality reaches 60 dB"):
        assert search(lambda q: 20 + q, Target("psnr", 60)) == 10.0


@pytest.fixture(scope="module")
def img(make_image) -> np.ndarray:
    return make_image(64, 96, seed=4)


@pytest.mark.parametrize("kwargs", [{"target_size": 1500}, {"target_bpp": 1.0}])
def test_size_targets_are_met_closely(codec: Codec, img, kwargs):
    data = codec.compress(img, **kwargs)
    limit = kwargs.get("target_size") or kwargs["target_bpp"] * img.shape[0] * img.shape[1] / 8
    assert len(data) <= limit
    quality = Codec.info(data)[0].quality
    above = codec.compress(img, min(quality + 0.25, 10))
    assert quality == 10 or len(above) > limit  # not far below the best quality that fits


def test_psnr_target_is_reached(codec: Codec, img):
    data = codec.compress(img, target_psnr=32.0)
    out = np.asarray(codec.decompress(data))
    assert rate_control.psnr(out, img) >= 32.0
    quality = Codec.info(data)[0].quality
    below = np.asarray(codec.decompress(codec.compress(img, max(quality - 0.5, 1))))
    assert quality == 1 or rate_control.psnr(below, img) < 32.0 + 1.0


def test_a_batch_gives_each_image_its_own_quality(codec: Codec, img, make_image):
    flat = np.full((64, 96, 3), 120, np.uint8)
    a, b = codec.compress_batch([img, flat], target_size=900)
    assert len(a) <= 900 and len(b) <= 900
    assert Codec.info(a)[0].quality < Codec.info(b)[0].quality
