"""Encoder effort (vaecodec/refine.py): the latent search must lower the real rate-distortion cost,
stay deterministic, leave the decoder's view of a file unchanged, and reject bad effort values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaecodec import EFFORT_MAX, Codec, VaecodecError, refine
from vaecodec.quality import level_of
from vaecodec.refine import _soft_round
from vaecodec.transforms import pad


def _cost(codec: Codec, img: np.ndarray, quality: float, effort: int) -> float:
    """lambda * 255^2 * MSE + bpp of the real file: what the search minimizes, measured end to end."""
    data = codec.compress(img, quality, effort=effort)
    out = np.asarray(codec.decompress(data)).astype(np.float64)
    lam = float(codec.model.gains.lambda_at(torch.tensor([level_of(quality)])))
    mse = np.mean((out - img) ** 2)
    return lam * mse + 8 * len(data) / (img.shape[0] * img.shape[1])


@pytest.mark.parametrize("quality", [5, 9])
def test_effort_lowers_rate_distortion_cost(codec, make_image, quality):
    img = make_image(64, 96, seed=1)
    costs = [_cost(codec, img, quality, effort) for effort in range(EFFORT_MAX + 1)]
    assert costs[1] < costs[0]
    assert costs[2] < 0.99 * costs[0], costs


def test_effort_is_deterministic_alone_or_in_a_batch(codec, make_image):
    imgs = [make_image(32, 48, seed=s) for s in range(3)]
    alone = [codec.compress(img, 6, effort=1) for img in imgs]
    assert alone == [codec.compress(img, 6, effort=1) for img in imgs]
    assert codec.compress_batch(imgs, 6, batch_size=3, effort=1) == alone


def test_tiles_cover_the_image_and_skip_padding(codec, make_image, monkeypatch):
    """With tiles smaller than the latent grid, every tile that draws image pixels moves (its
    padding-only latents too, towards cheaper values), and tiles of padding alone are left as g_a
    made them."""
    monkeypatch.setattr(refine, "TILE", 2)
    img = make_image(20, 100, seed=2)  # padded to 64 x 128: latent grid 4 x 8, image in rows 0-1
    m = codec.model
    x = pad(torch.from_numpy(img).permute(2, 0, 1).float()[None] / 255)
    level = torch.tensor([level_of(6)])
    with torch.no_grad():
        y = m.analyze(x, level)
        _, mean, index = m.latent.hyper(y)
    out = refine.refine(m, x, y, mean, index, level, (100, 20), effort=1)
    moved = (out != y).any(dim=1)[0]
    assert moved[:2].all()
    assert not moved[2:].any()


def test_soft_round_anneals_to_rounding():
    r = torch.linspace(-3.2, 3.2, 101)
    gen = [torch.Generator().manual_seed(0)]
    soft = _soft_round(r[None], 0.5, gen)[0]
    assert ((soft >= torch.floor(r)) & (soft <= torch.floor(r) + 1)).all()
    cold = _soft_round(r[None], 1e-3, [torch.Generator().manual_seed(0)])[0]
    assert torch.allclose(cold, torch.round(r), atol=1e-3)


@pytest.mark.parametrize("effort", [-1, EFFORT_MAX + 1, 1.5, True, "2"])
def test_bad_effort_is_refused(codec, make_image, effort):
    with pytest.raises(VaecodecError, match="effort"):
        codec.compress(make_image(16, 16), 5, effort=effort)
