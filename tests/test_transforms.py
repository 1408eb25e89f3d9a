"""Transforms: shapes, and that every GDN parameter can learn."""

from __future__ import annotations

import torch

from vaecodec.transforms import AnalysisTransform, QualityGains, SimplifiedGDN, SynthesisTransform


def test_gdn_off_diagonal_gamma_gets_gradient():
    # Regression: gamma = gamma_sqrt**2 with off-diagonal roots initialised to exactly 0 has zero
    # gradient there forever, silently reducing GDN to a pointwise nonlinearity.
    torch.manual_seed(0)
    for inverse in (False, True):
        gdn = SimplifiedGDN(6, inverse=inverse)
        gdn(torch.randn(2, 6, 5, 5)).square().sum().backward()
        grad = gdn.gamma_sqrt.grad
        off_diagonal = ~torch.eye(6, dtype=torch.bool)
        assert (grad[off_diagonal] != 0).all()


def test_transform_shapes_and_inverse_gain():
    g_a, g_s = AnalysisTransform(8, 12), SynthesisTransform(8, 12)
    y = g_a(torch.rand(2, 3, 64, 48))
    assert y.shape == (2, 12, 4, 3)
    assert g_s(y).shape == (2, 3, 64, 48)
    gains = QualityGains(12, [0.001, 0.01, 0.1])
    level = torch.tensor([0.0, 1.5])
    assert gains.gain(level).shape == (2, 12, 1, 1)
    # freshly initialised, the inverse gain undoes the gain, also between levels
    torch.testing.assert_close(gains.gain(level) * gains.inverse_gain(level), torch.ones(2, 12, 1, 1))
    with torch.no_grad():
        assert gains.gain(torch.tensor([2.0])).mean() > gains.gain(torch.tensor([0.0])).mean()


def test_tiled_transforms_equal_the_whole_image():
    """With the halo the tiles see every input their outputs depend on (a margin that is too small
    visibly changes the result, so the check has teeth)."""
    from vaecodec import Codec
    from vaecodec.transforms import tiled

    m = Codec(device="cpu").model
    torch.manual_seed(0)
    x = torch.rand(1, 3, 7 * 16, 10 * 16)
    y = torch.randn(1, m.g_s[0].in_channels, 7, 10) * 3
    with torch.no_grad():
        for net, inp, cells in ((m.g_a, x, (16, 1)), (m.g_s, y, (1, 16))):
            whole = net(inp)
            assert torch.allclose(tiled(net, inp, *cells, tile=3), whole, atol=1e-4)
            assert not torch.allclose(tiled(net, inp, *cells, tile=3, halo=0), whole, atol=1e-3)
            assert torch.equal(tiled(net, inp, *cells, tile=10), whole)  # one tile: the plain call
