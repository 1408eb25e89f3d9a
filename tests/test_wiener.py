"""The per-image Wiener filter: its section's bytes, its folding into a convolution, the encoder's fit,
and what the codec does with it (format 2, format-1 files, damaged sections)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from bench.metrics import psnr
from vaecodec import container, wiener
from vaecodec.errors import CorruptFileError

SHAPES = [(own, cross) for own in wiener.OWN_SIZES for cross in wiener.CROSS_SIZES]


def _random_filter(own_k: int, cross_k: int, seed: int, scale: int = 40) -> wiener.WienerFilter:
    rng = np.random.default_rng(seed)
    coef = np.round(rng.laplace(0, scale, (3, wiener.n_features(own_k, cross_k)))).astype(np.int64)
    return wiener.WienerFilter(own_k, cross_k, 8, coef)


@pytest.mark.parametrize("own_k,cross_k", SHAPES)
def test_section_round_trips(own_k, cross_k):
    filt = _random_filter(own_k, cross_k, seed=own_k * 10 + cross_k)
    back = wiener.decode(wiener.encode(filt))
    assert (back.own_k, back.cross_k, back.step) == (own_k, cross_k, 8)
    assert np.array_equal(back.coefficients, filt.coefficients)
    assert len(wiener.encode(filt)) * 8 == wiener.size_in_bits(filt.coefficients)


def test_extreme_coefficients_round_trip():
    coef = np.zeros((3, wiener.n_features(5, 3)), dtype=np.int64)
    coef[0, 0], coef[1, 3], coef[2, -1] = 1 << 20, -(1 << 20), 1
    filt = wiener.WienerFilter(5, 3, 12, coef)
    assert np.array_equal(wiener.decode(wiener.encode(filt)).coefficients, coef)


def test_apply_is_the_feature_formula():
    """The folded convolution computes x + sum_i w_i f_i + bias with the documented features."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (3, 23, 31))
    filt = _random_filter(7, 3, seed=2, scale=200)
    out = filt.apply(torch.from_numpy(x)[None])[0].numpy()
    r = 3
    xp = np.pad(x, ((0, 0), (r, r), (r, r)), mode="edge")
    rows = np.arange(x.shape[1])
    A = wiener._features(xp, r, 7, rows).T
    for c in range(3):
        w = filt.coefficients[c] * wiener._scales(7, 3, c, filt.step)
        want = x[c] + (A[:, wiener._columns(7, 3, 7, c)] @ w).reshape(x.shape[1:])
        np.testing.assert_allclose(out[c], want, atol=1e-9)


def _blurred(original: np.ndarray) -> np.ndarray:
    """A stand-in for a decoder's output: blurred, a little too dark, with its colours mixed."""
    x = torch.from_numpy(original.astype(np.float64))[None]
    k = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    k = (k[:, None] * k[None]) / 16
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.expand(3, 1, 3, 3), groups=3)[0]
    mix = torch.tensor([[0.9, 0.05, 0.0], [0.0, 0.95, 0.05], [0.05, 0.0, 0.9]], dtype=torch.float64)
    return torch.einsum("cd,dhw->chw", mix, blurred).numpy() - 3.0


def test_fit_undoes_a_linear_degradation(make_image):
    original = make_image(96, 128, seed=5).transpose(2, 0, 1)
    decoded = _blurred(original)
    filt = wiener.fit(decoded, original, lam=0.05)
    assert filt is not None
    out = filt.apply(torch.from_numpy(decoded)[None])[0].numpy()
    before = np.mean((decoded - original) ** 2)
    after = np.mean((out - original) ** 2)
    assert after < 0.2 * before, (before, after)


def test_fit_sends_nothing_when_bits_cost_more_than_they_buy(make_image):
    original = make_image(32, 32, seed=6).transpose(2, 0, 1)
    assert wiener.fit(original.astype(np.float64), original, lam=0.05) is None  # nothing to mend
    assert wiener.fit(_blurred(original), original, lam=1e-7) is None  # mending is worth no bits


@pytest.mark.parametrize("section,message", [
    (b"\x05\x03", "truncated"),
    (b"\x04\x03\x08\x00", "unknown shape"),
    (b"\x05\x03\x08\x00\x80", "runs past"),
])
def test_malformed_sections_are_refused(section, message):
    with pytest.raises(CorruptFileError, match=message):
        wiener.decode(section)


def test_an_oversized_section_is_refused_before_it_is_unpacked():
    with pytest.raises(CorruptFileError, match="longer than"):
        wiener.decode(b"\x05\x03\x08\x00" + b"\xff" * 10_000)


def test_trailing_bits_are_refused():
    data = wiener.encode(_random_filter(5, 3, seed=3))
    with pytest.raises(CorruptFileError, match="trailing"):
        wiener.decode(data + b"\x00")
    with pytest.raises(CorruptFileError, match="trailing|runs past"):
        wiener.decode(data[:-1] + bytes([data[-1] | 1]))


def test_codec_sends_a_filter_and_it_pays(codec, make_image):
    img = make_image(192, 256, seed=7)
    with_filter, without = codec.compress(img, quality=5), codec.compress(img, quality=5, wiener=False)
    header, payload = container.unpack(with_filter)
    assert payload.filter
    assert container.unpack(without)[1].filter == b""
    varint = len(payload.filter) > 127  # a longer length field
    assert len(with_filter) - len(without) == len(payload.filter) + varint
    decoded = [np.asarray(codec.decompress(data)) for data in (with_filter, without)]
    gain = psnr(img, decoded[0]) - psnr(img, decoded[1])
    assert gain > 0.05, gain


def test_a_damaged_filter_section_is_reported_not_decoded(codec, make_image):
    img = make_image(192, 256, seed=7)
    header, payload = container.unpack(codec.compress(img, quality=5))
    bad = container.Payload(payload.stream, payload.escapes, payload.alpha, b"\x09" + payload.filter[1:])
    with pytest.raises(CorruptFileError, match="filter section"):
        codec.decompress(container.pack(header, bad))
