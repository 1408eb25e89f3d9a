"""Large images run every network tile by tile (vaecodec.transforms.tiled). The integer networks decide
the probabilities, so tiled they must give the very same integers as untiled, whatever the tile size:
a halo that covers each one's receptive field makes that so, and a smaller halo visibly breaks it. So
files are byte-identical whether tiled or not. The Wiener filter is applied in bands of rows and fitted
from a few rows at a time, with the same numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import PSNR_FLOOR, psnr, smooth_image
from torch.nn import functional as F

from vaecodec import latent_codec, prior, wiener
from vaecodec.prior import (
    CTX_HALO,
    HS_HALO,
    IntegerCheckerboardContext,
    IntegerHyperSynthesis,
    checkerboard_anchors,
    ctx_layers,
    ctx_tiled,
    hs_layers,
    hs_tiled,
)
from vaecodec.transforms import HA_HALO, tiled


def _random_network(cls: type, spec: list, seed: int, shift: int):
    """A small integer network with random weights (exactness is checked by its constructor)."""
    g = torch.Generator().manual_seed(seed)
    weights, biases, shifts = [], [], []
    for kind, cin, cout, k, _ in spec:
        shape = (cin, cout, k, k) if kind == "deconv" else (cout, cin, k, k)
        weights.append(torch.randint(-(2**9), 2**9, shape, generator=g))
        biases.append(torch.randint(-(2**12), 2**12, (cout,), generator=g))
        shifts.append(torch.full((cout,), shift))
    return cls(spec, weights, biases, shifts)


def _random_z(channels: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.randint(-8, 9, (2, channels, h, w), generator=torch.Generator().manual_seed(seed))


def _context_inputs(h_s: IntegerHyperSynthesis, z: torch.Tensor, seed: int) -> tuple[torch.Tensor, ...]:
    """h_s's (mean, index) of z and random anchor symbols: what the context network is given."""
    mean, index = h_s(z)
    sym = torch.randint(-5, 6, mean.shape, generator=torch.Generator().manual_seed(seed))
    return torch.where(checkerboard_anchors(*mean.shape[2:]), sym, 0), mean, index


def _same(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def small_nets() -> tuple[IntegerHyperSynthesis, IntegerCheckerboardContext]:
    return (_random_network(IntegerHyperSynthesis, hs_layers(8, 6), seed=1, shift=12),
            _random_network(IntegerCheckerboardContext, ctx_layers(6), seed=2, shift=14))


@pytest.mark.parametrize("tile", [1, 2, 3])
def test_h_s_tiles_give_the_same_integers(small_nets, tile):
    h_s = small_nets[0]
    z = _random_z(h_s.spec[0][1], 5, 4, seed=tile)
    assert _same(hs_tiled(h_s, z, tile), h_s(z))


@pytest.mark.parametrize("tile", [2, 4, 6])
def test_context_tiles_give_the_same_integers(small_nets, tile):
    h_s, ctx = small_nets
    inputs = _context_inputs(h_s, _random_z(h_s.spec[0][1], 2, 3, seed=tile), seed=tile)
    assert _same(ctx_tiled(ctx, *inputs, tile=tile), ctx(*inputs))


def test_shipped_networks_tile_exactly(codec):
    """The shipped h_s and context, on a few tiles each (interior ones included); a halo one cell (one
    checkerboard period) short is seen to break them, so these tests can tell."""
    h_s, ctx = codec.model.latent.h_s, codec.model.latent.context
    z = _random_z(h_s.spec[0][1], 5, 4, seed=0)
    whole = h_s(z)
    assert _same(hs_tiled(h_s, z, 2), whole)
    assert not _same(hs_tiled(h_s, z, 2, HS_HALO - 1), whole)
    inputs = _context_inputs(h_s, z[:, :, :3, :3], seed=0)
    whole = ctx(*inputs)
    assert _same(ctx_tiled(ctx, *inputs, tile=4), whole)
    assert not _same(ctx_tiled(ctx, *inputs, tile=4, halo=CTX_HALO - 2), whole)
    with pytest.raises(ValueError, match="even"):
        ctx_tiled(ctx, *inputs, tile=3)


def test_h_a_tiles_match_to_rounding(codec):
    h_a = codec.model.latent.h_a
    y = torch.randn(1, codec.model.config.m, 24, 20, generator=torch.Generator().manual_seed(0)) * 4
    with torch.no_grad():
        whole = h_a(y)
        for tile in (2, 3):
            torch.testing.assert_close(tiled(h_a, y, 4, 1, tile, HA_HALO), whole, atol=1e-4, rtol=1e-5)


def _small_tiles(monkeypatch) -> None:
    """Every tiling of the latent codec and of the Wiener filter made small enough that a small image
    runs through several tiles of each (h_a stays whole: it is float, and z is its rounding)."""
    monkeypatch.setattr(prior, "HS_TILE", 2)
    monkeypatch.setattr(prior, "CTX_TILE", 6)
    monkeypatch.setattr(latent_codec, "POINTWISE_TILE", 5)
    monkeypatch.setattr(wiener, "_BAND_PIXELS", 1)
    monkeypatch.setattr(wiener, "_CHUNK_PIXELS", 999)


def test_encoder_latents_are_the_same_tiled_or_not(codec, monkeypatch):
    """The encoder's one-pass latents (h_s, context and symbols per tile of z) and its two-step ones
    (h_s's whole-image parameters, which the effort search uses) are the same integers, tiled or not."""
    latent = codec.model.latent
    y = torch.randn(1, codec.model.config.m, 24, 20, generator=torch.Generator().manual_seed(1)) * 3
    want = latent.latents(y).numpy()
    _small_tiles(monkeypatch)
    for latents in (latent.latents(y), latent.quantize(y, *latent.hyper(y))):
        got = latents.numpy()
        assert all(np.array_equal(got[k], want[k]) for k in want)


def test_files_are_the_same_tiled_or_not(codec, monkeypatch):
    img = smooth_image(150, 200, seed=5)  # z is 3x4, y 12x16
    files = [codec.compress(img, q) for q in (2, 9)]
    images = [np.asarray(codec.decompress(f)) for f in files]
    integers = [codec.decode_integers(f) for f in files]
    _small_tiles(monkeypatch)
    assert [codec.compress(img, q) for q in (2, 9)] == files
    for f, want, ints in zip(files, images, integers, strict=True):
        np.testing.assert_array_equal(np.asarray(codec.decompress(f)), want)
        got = codec.decode_integers(f)
        assert all(np.array_equal(got[k], ints[k]) for k in ints)


def test_wiener_bands_are_the_whole_image_filter():
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.uniform(0, 255, (1, 3, 29, 17)).astype(np.float32))
    coef = np.round(rng.laplace(0, 40, (3, wiener.n_features(7, 3)))).astype(np.int64)
    filt = wiener.WienerFilter(7, 3, 8, coef)
    weight, bias = filt.kernel()
    whole = x + F.conv2d(F.pad(x, (3, 3, 3, 3), mode="replicate"), weight.to(x), bias.to(x))
    for rows in (1, 2, 5, 29):
        out = torch.cat([band for _, _, band in filt.bands(x, rows)], dim=2)
        torch.testing.assert_close(out, whole, atol=1e-4, rtol=0)
    torch.testing.assert_close(filt.apply(x), whole, atol=1e-4, rtol=0)


def test_wiener_features_from_neighbourhoods_are_those_of_the_padded_image():
    x = np.random.default_rng(4).uniform(0, 255, (3, 11, 13)).astype(np.float32)
    r, k = 3, 7
    xp = np.pad(x.astype(np.float64), ((0, 0), (r, r), (r, r)), mode="edge")
    for rows in (np.arange(11), np.arange(2, 6), np.array([2]), np.array([0, 1, 5, 9, 10])):
        near, local = wiener._neighbourhoods(x, rows, r)
        got = wiener._features(near, r, k, local)
        np.testing.assert_array_equal(got, wiener._features(xp, r, k, rows))


def test_large_image_round_trips_tiled(codec, monkeypatch):
    """1500x1100: g_a and g_s tile at their own sizes; the latent codec's tiles are made small (still
    several cells, unlike the tests above) so that it tiles too."""
    monkeypatch.setattr(prior, "HS_TILE", 8)
    monkeypatch.setattr(prior, "CTX_TILE", 32)
    monkeypatch.setattr(latent_codec, "HA_TILE", 8)
    monkeypatch.setattr(latent_codec, "POINTWISE_TILE", 40)
    img = smooth_image(1100, 1500, seed=6)
    out = np.asarray(codec.decompress(codec.compress(img, quality=3)))
    assert out.shape == img.shape
    assert psnr(out, img) > PSNR_FLOOR
