"""Analysis and synthesis transforms: image <-> latent y.

These are ordinary float networks. They may differ by a few ULPs between CPU and GPU; that only moves
decoded pixels by tiny amounts and never affects decodability, because nothing here decides a
probability (see :mod:`vaecodec.prior` for the part that does).

Architecture (Ballé et al. 2018 / Minnen et al. 2018, "mean-scale hyperprior"): four stride-2 5x5
convolutions with a simplified GDN between them (Johnston et al. 2019, ``x / (beta + gamma |x|)``),
which is cheaper than the square-root GDN and compresses as well.

Variable rate (Cui et al. 2021, "Asymmetric gained deep image compression"): one gain vector per
quality level multiplies y channel-wise before quantization, and an inverse gain vector undoes it
before synthesis. A larger gain means a finer effective quantization step, i.e. higher quality.
Fractional quality levels interpolate the log-gains, which gives a continuous quality knob from a
single trained model. Levels below the lowest trained one extrapolate the log-gains linearly (down
to ``MIN_LEVEL``): a smaller gain is simply a coarser quantization step, which gives a smooth,
measured continuation to lower rates without another model.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class SimplifiedGDN(nn.Module):
    """``y = x / (beta + gamma @ |x|)`` (or its inverse, ``x * (...)``), per pixel across channels.

    beta and gamma are kept non-negative by storing their square roots. The off-diagonal roots start
    at a small non-zero value (``OFF_DIAGONAL_INIT``): the gradient of ``g**2`` vanishes at ``g = 0``,
    so entries initialised to exactly zero would never learn and the layer would stay a pointwise
    nonlinearity without the cross-channel normalization that makes GDN work.
    """

    OFF_DIAGONAL_INIT = 0.01

    def __init__(self, channels: int, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta_sqrt = nn.Parameter(torch.ones(channels))
        eye = torch.eye(channels)
        init = math.sqrt(0.1) * eye + self.OFF_DIAGONAL_INIT * (1 - eye)
        self.gamma_sqrt = nn.Parameter(init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = self.beta_sqrt.square() + 1e-6
        gamma = self.gamma_sqrt.square()[:, :, None, None]
        norm = F.conv2d(x.abs(), gamma, beta)
        return x * norm if self.inverse else x / norm


def _conv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def _deconv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, k, stride=stride, padding=k // 2, output_padding=stride - 1)


class AnalysisTransform(nn.Sequential):
    """g_a: RGB in [0, 1], shape (B, 3, H, W) with H, W multiples of 16 -> y, (B, M, H/16, W/16)."""

    def __init__(self, n: int, m: int) -> None:
        super().__init__(
            _conv(3, n), SimplifiedGDN(n),
            _conv(n, n), SimplifiedGDN(n),
            _conv(n, n), SimplifiedGDN(n),
            _conv(n, m),
        )


class SynthesisTransform(nn.Sequential):
    """g_s: y_hat (B, M, h, w) -> RGB estimate (B, 3, 16h, 16w), not yet clamped to [0, 1]."""

    def __init__(self, n: int, m: int) -> None:
        super().__init__(
            _deconv(m, n), SimplifiedGDN(n, inverse=True),
            _deconv(n, n), SimplifiedGDN(n, inverse=True),
            _deconv(n, n), SimplifiedGDN(n, inverse=True),
            _deconv(n, 3),
        )


class PostFilter(nn.Module):
    """A small residual filter on g_s's output, at full resolution, told the quality level.

    g_s ends in a linear transposed convolution, so nothing nonlinear happens at full resolution;
    four 3x3 convolutions of ``width`` channels there (``width`` = 16: 5.6 k multiply-adds a pixel,
    about 14 % of g_s's) take out some of the coding artefacts g_s leaves. The level enters as a
    constant extra input plane (times ``LEVEL_SCALE``), because what is worth removing at quality 1
    is detail at quality 10. The last layer starts at zero, so a post-filter added to a trained
    model starts as the identity and the model's own numbers are the starting point. It is a float
    network like g_s: it moves decoded pixels, never a probability.
    """

    LEVEL_SCALE = 1 / 8

    def __init__(self, width: int) -> None:
        super().__init__()
        channels = [4, width, width, width, 3]  # RGB and the level plane in, RGB out
        pairs = zip(channels[:-1], channels[1:], strict=True)
        self.layers = nn.ModuleList([nn.Conv2d(a, b, 3, padding=1) for a, b in pairs])
        with torch.no_grad():
            self.layers[-1].weight.zero_()
            self.layers[-1].bias.zero_()

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        plane = (level.to(x.dtype) * self.LEVEL_SCALE)[:, None, None, None].expand(-1, 1, *x.shape[2:])
        h = torch.cat([x, plane], dim=1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return x + h


# Tiling of the transforms for large images. Both transforms are convolutional with a receptive field
# of under 2 latent positions (the 5x5 stride-2 layers add at most 1 + 1/2 + 1/4 + 1/8 < 2 latent
# cells of context), so a tile computed with HALO latent cells of real neighbours around it equals the
# whole-image result up to float rounding. Peak memory then follows the tile, not the image
# (bench.speed: a 4000x3000 photo needed 5.4 GB whole on the CPU). Images up to TILE latent cells
# (768 px) on each side, Kodak included, are not tiled.
TILE = 48
HALO = 3


def tiled(net: nn.Module, x: torch.Tensor, in_cell: int, out_cell: int,
          tile: int = TILE, halo: int = HALO) -> torch.Tensor:
    """``net(x)`` computed tile by tile on the latent grid. One latent cell is ``in_cell`` input
    and ``out_cell`` output positions per side: 16 and 1 for g_a, 1 and 16 for g_s."""
    h, w = x.shape[2] // in_cell, x.shape[3] // in_cell
    if h <= tile and w <= tile:
        return net(x)
    out = None
    for r0 in range(0, h, tile):
        for c0 in range(0, w, tile):
            r1, c1 = min(r0 + tile, h), min(c0 + tile, w)
            a0, b0, a1, b1 = max(r0 - halo, 0), max(c0 - halo, 0), min(r1 + halo, h), min(c1 + halo, w)
            part = net(x[..., a0 * in_cell : a1 * in_cell, b0 * in_cell : b1 * in_cell])
            if out is None:
                out = part.new_empty(*part.shape[:2], h * out_cell, w * out_cell)
            out[..., r0 * out_cell : r1 * out_cell, c0 * out_cell : c1 * out_cell] = part[
                ..., (r0 - a0) * out_cell : (r1 - a0) * out_cell, (c0 - b0) * out_cell : (c1 - b0) * out_cell]
    return out


class QualityGains(nn.Module):
    """Per-quality-level channel gains for y (and their inverses), interpolated for fractional levels.

    Level ``i`` (0-based) is trained with rate-distortion weight ``lambdas[i]``. Gains are stored as
    logarithms so that they stay positive and interpolate geometrically. They are initialised to
    ``sqrt(lambda / lambda_ref)``, the step-size scaling that MSE-optimal quantization follows, so
    that the levels are spread in rate from the first training step.
    """

    def __init__(self, m: int, lambdas: list[float]) -> None:
        super().__init__()
        self.register_buffer("lambdas", torch.tensor(lambdas, dtype=torch.float32))
        ref = math.exp(sum(math.log(v) for v in lambdas) / len(lambdas))
        init = torch.tensor([0.5 * math.log(v / ref) for v in lambdas])[:, None].repeat(1, m)
        self.log_gain = nn.Parameter(init.clone())
        self.log_inv_gain = nn.Parameter(-init.clone())

    @property
    def levels(self) -> int:
        return len(self.lambdas)

    MIN_LEVEL = -2.0

    def _interp(self, table: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """Geometric interpolation between neighbouring levels; ``level`` is a float tensor (B,).

        Below level 0 (down to MIN_LEVEL) every channel moves by the same log-step, the mean step per
        level over all channels and levels: a per-channel extrapolation would amplify channels whose
        gain is not monotone between the two lowest levels and could *raise* the rate.
        """
        level = level.clamp(self.MIN_LEVEL, self.levels - 1)
        lo = level.floor().long().clamp(0, self.levels - 2)
        frac = (level.clamp(min=0) - lo.to(level.dtype))[:, None]
        log_gain = (1 - frac) * table[lo] + frac * table[lo + 1]
        slope = (table[-1] - table[0]).mean() / (self.levels - 1)
        log_gain = log_gain + level.clamp(max=0)[:, None] * slope
        return log_gain.exp()[:, :, None, None]

    def lambda_at(self, level: torch.Tensor) -> torch.Tensor:
        """Rate-distortion weight of a (fractional, possibly extrapolated) level, interpolated like
        the gains: geometrically, and below level 0 by the mean log-step. Shape (B,)."""
        return self._interp(self.lambdas.log()[:, None], level).flatten()

    def gain(self, level: torch.Tensor) -> torch.Tensor:
        return self._interp(self.log_gain, level)

    def inverse_gain(self, level: torch.Tensor) -> torch.Tensor:
        return self._interp(self.log_inv_gain, level)
