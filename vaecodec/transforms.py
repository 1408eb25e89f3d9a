"""The float networks: analysis g_a and synthesis g_s (image <-> latent y), the hyper-analysis h_a,
the post-filter and the quality gains; and the padding and tiling every image goes through.

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
to :data:`vaecodec.quality.MIN_LEVEL`): a smaller gain is simply a coarser quantization step, which
gives a smooth continuation to lower rates without another model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .quality import QualityScale

# Pointwise work on large activations goes a band of about this many elements at a time.
_BAND_ELEMENTS = 1 << 20


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
        beta, gamma = self._parameters_as(x.dtype)
        norm = F.conv2d(x.abs(), gamma, beta)
        return x * norm if self.inverse else x / norm

    def _parameters_as(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        beta = self.beta_sqrt.square() + 1e-6
        gamma = self.gamma_sqrt.square()[:, :, None, None]
        return beta.to(dtype), gamma.to(dtype)

    def forward_(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` without autograd, in place on x, a band of rows at a time: the same arithmetic
        (each pixel's normalization reads only its own channels), without the three image-sized
        temporaries (``|x|``, the norm, the product) that a large layer would otherwise allocate and
        fault in afresh on every call; a band's temporaries stay in cache."""
        beta, gamma = self._parameters_as(x.dtype)
        rows = max(1, _BAND_ELEMENTS // (x.shape[0] * x.shape[1] * x.shape[3]))
        for r0 in range(0, x.shape[2], rows):
            band = x[:, :, r0 : r0 + rows]
            norm = F.conv2d(band.abs(), gamma, beta)
            band.mul_(norm) if self.inverse else band.div_(norm)
        return x


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


def _phases(layer: nn.ConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A 5x5 stride-2 transposed convolution (padding 2, output padding 1) as a 3x3 convolution
    (padding 1) to 4 times the channels and a 2x pixel shuffle: output pixel (2a + r, 2b + s) reads
    the inputs a - 1 .. a + 1 (b - 1 .. b + 1) through the kernel taps of parity r (s). The same sums,
    in a form that oneDNN runs much faster for few output channels. Weight (4 C_out, C_in, 3, 3), bias."""
    w = layer.weight  # (C_in, C_out, 5, 5)
    out = w.new_zeros(w.shape[1], 2, 2, w.shape[0], 3, 3)
    taps = {0: ((0, 4), (1, 2), (2, 0)), 1: ((1, 3), (2, 1))}  # parity -> (3x3 position, 5x5 tap)
    for r in (0, 1):
        for s in (0, 1):
            for i, ki in taps[r]:
                for j, kj in taps[s]:
                    out[:, r, s, :, i, j] = w[:, :, ki, kj].t()
    return out.reshape(-1, w.shape[0], 3, 3), layer.bias.repeat_interleave(4)


class SynthesisTransform(nn.Sequential):
    """g_s: y_hat (B, M, h, w) -> RGB estimate (B, 3, 16h, 16w), not yet clamped to [0, 1].

    With autograd (training, the encoder's latent search) it runs its layers as they are, in
    float32. Without (decoding) it runs the same arithmetic laid out for speed, in ``compute_dtype``
    (float32 unless the loader chose bfloat16, :func:`vaecodec.model.load`): GDN in place a band at
    a time (:meth:`SimplifiedGDN.forward_`) and the last layer as a convolution and a pixel shuffle
    (:func:`_phases`); the output is float32. In float32 that differs from the autograd path by
    float rounding only; what bfloat16 costs is measured in ``bench/results/decode_speed.md``.
    """

    def __init__(self, n: int, m: int) -> None:
        super().__init__(
            _deconv(m, n), SimplifiedGDN(n, inverse=True),
            _deconv(n, n), SimplifiedGDN(n, inverse=True),
            _deconv(n, n), SimplifiedGDN(n, inverse=True),
            _deconv(n, 3),
        )
        self.compute_dtype = torch.float32  # a plain attribute: not in the state dict

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return super().forward(y)
        dt = self.compute_dtype
        h = y.to(dt).contiguous(memory_format=torch.channels_last)
        *hidden, last = self
        for deconv, gdn in zip(hidden[::2], hidden[1::2], strict=True):
            h = F.conv_transpose2d(h, deconv.weight.to(dt), deconv.bias.to(dt), deconv.stride,
                                   deconv.padding, deconv.output_padding)
            h = gdn.forward_(h)
        weight, bias = _phases(last)
        return F.pixel_shuffle(F.conv2d(h, weight.to(dt), bias.to(dt), padding=1), 2).float()


class HyperAnalysis(nn.Sequential):
    """h_a: y -> z at 1/4 of y's resolution. Only the encoder runs it, so it may be float."""

    def __init__(self, n: int, m: int) -> None:
        super().__init__(
            nn.Conv2d(m, n, 3, padding=1), nn.LeakyReLU(),
            nn.Conv2d(n, n, 5, stride=2, padding=2), nn.LeakyReLU(),
            nn.Conv2d(n, n, 5, stride=2, padding=2),
        )


class PostFilter(nn.Module):
    """A small residual filter on g_s's output, at full resolution, told the quality level.

    g_s ends in a linear transposed convolution, so nothing nonlinear happens at full resolution;
    four 3x3 convolutions of ``width`` channels there (a small fraction of g_s's arithmetic) take out
    some of the coding artefacts g_s leaves. The level enters as a constant extra input plane (times
    ``LEVEL_SCALE``), because what is worth removing at quality 1 is detail at quality 10. The last
    layer starts at zero, so a post-filter added to a trained model starts as the identity and the
    model's own numbers are the starting point. It is a float network like g_s: it moves decoded
    pixels, never a probability.
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
        self.compute_dtype = torch.float32  # of the residual, without autograd (as SynthesisTransform)

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """x plus the filter's residual. Without autograd the residual is computed in
        ``compute_dtype`` and added to x in x's own dtype, so that the image keeps its precision
        and only the (small) correction is rounded."""
        fast = not torch.is_grad_enabled()
        dt = self.compute_dtype if fast else x.dtype
        plane = (level.to(dt) * self.LEVEL_SCALE)[:, None, None, None].expand(-1, 1, *x.shape[2:])
        h = torch.cat([x.to(dt), plane], dim=1)
        if fast:  # the layout of its weights (model.load), which oneDNN runs fastest
            h = h.contiguous(memory_format=torch.channels_last)
        for i, layer in enumerate(self.layers):
            h = F.conv2d(h, layer.weight.to(dt), layer.bias.to(dt), padding=1)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return x + h.to(x.dtype)


# Padding: g_a downsamples by 16 and h_a by 4 more, so images are padded to multiples of 64.
PAD = 64


def padded_size(width: int, height: int) -> tuple[int, int]:
    """(height, width) of an image once padded to multiples of PAD."""
    return height + (-height) % PAD, width + (-width) % PAD


def pad(x: torch.Tensor) -> torch.Tensor:
    """Images (B, C, H, W) padded on the right and bottom to multiples of PAD, edges replicated."""
    hp, wp = padded_size(x.shape[3], x.shape[2])
    return F.pad(x, (0, wp - x.shape[3], 0, hp - x.shape[2]), mode="replicate")


@dataclass(frozen=True)
class Tile:
    """One tile of a grid: its own rows/columns [r0, r1) x [c0, c1), and the same grown by a halo and
    cut to the grid, [a0, a1) x [b0, b1)."""

    r0: int
    r1: int
    c0: int
    c1: int
    a0: int
    a1: int
    b0: int
    b1: int

    def inner(self, scale: int = 1) -> tuple[slice, slice]:
        """Where the tile's own cells sit in its halo-grown crop, ``scale`` positions per cell."""
        return (slice((self.r0 - self.a0) * scale, (self.r1 - self.a0) * scale),
                slice((self.c0 - self.b0) * scale, (self.c1 - self.b0) * scale))


def tiles(height: int, width: int, tile: int, halo: int) -> Iterator[Tile]:
    """The tiles of a height x width grid, in raster order, each with ``halo`` cells around it."""
    for r0 in range(0, height, tile):
        for c0 in range(0, width, tile):
            r1, c1 = min(r0 + tile, height), min(c0 + tile, width)
            yield Tile(r0, r1, c0, c1, max(r0 - halo, 0), min(r1 + halo, height), max(c0 - halo, 0),
                       min(c1 + halo, width))


# Tiling of the transforms for large images. Both transforms are convolutional with a receptive field
# of under 2 latent positions (the 5x5 stride-2 layers add at most 1 + 1/2 + 1/4 + 1/8 < 2 latent
# cells of context), so a tile computed with HALO latent cells of real neighbours around it equals the
# whole-image result up to float rounding. Peak memory then follows the tile, not the image. Images up
# to TILE latent cells (768 px) on each side are not tiled.
TILE = 48
HALO = 3

# h_a is tiled on z's grid (4 y cells per z cell). Its output at z cell j reads y rows 4j - 7 ..
# 4j + 7 (a 3x3, then two 5x5 stride-2 convolutions, which reach 1, 2 and 4 y rows each way), that
# is z cells j - 2 .. j + 1: a halo of 2 z cells holds all of it, and tiles that start on a z cell
# keep the strides' alignment. Its tiles cost far less memory than g_a's (192 channels in at 1/16 of
# the pixels), so they are larger.
HA_TILE = 64
HA_HALO = 2


def tiled(net: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]],
          x: torch.Tensor | tuple[torch.Tensor, ...], in_cell: int | tuple[int, ...], out_cell: int,
          tile: int = TILE, halo: int = HALO, out: tuple[torch.Tensor, ...] | None = None
          ) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """``net(x)`` computed tile by tile on a grid of cells (the latent grid of g_a and g_s). One cell
    is ``in_cell`` input and ``out_cell`` output positions per side: 16 and 1 for g_a, 1 and 16 for
    g_s. ``x`` may be a tuple of inputs covering one grid, passed to ``net`` as its arguments
    (broadcast ones, such as a (1, 1, H, W) mask, included), with one ``in_cell`` for all or one
    each; and ``net`` may return a tuple of outputs, each assembled like a single one. ``out``: where
    to write the outputs of a tiled call (it may be among the inputs when no tile reads a cell that
    an earlier tile wrote, other than in its discarded halo); untiled, the outputs are returned.

    A tile sees its ``halo`` cells of real neighbours and, at the grid's border, the same zero
    padding as the whole grid, so with a halo that covers the net's receptive field (and tiles that
    keep the alignment of its strides) every output cell depends on exactly the inputs it does
    untiled: an exact integer network gives the same integers, a float one the same up to rounding."""
    xs = x if isinstance(x, tuple) else (x,)
    cells = in_cell if isinstance(in_cell, tuple) else (in_cell,) * len(xs)
    h, w = xs[0].shape[2] // cells[0], xs[0].shape[3] // cells[0]
    if h <= tile and w <= tile:
        return net(*xs)
    single, outs = True, list(out or ())
    for t in tiles(h, w, tile, halo):
        crops = (v[..., t.a0 * c : t.a1 * c, t.b0 * c : t.b1 * c] for v, c in zip(xs, cells, strict=True))
        parts = net(*crops)
        single = not isinstance(parts, tuple)
        parts = (parts,) if single else parts
        if not outs:
            outs = [p.new_empty(*p.shape[:2], h * out_cell, w * out_cell) for p in parts]
        rows, cols = t.inner(out_cell)
        own = (slice(t.r0 * out_cell, t.r1 * out_cell), slice(t.c0 * out_cell, t.c1 * out_cell))
        for dest, part in zip(outs, parts, strict=True):
            dest[..., own[0], own[1]] = part[..., rows, cols]
    return outs[0] if single else tuple(outs)


class QualityGains(nn.Module):
    """Per-quality-level channel gains for y (and their inverses), interpolated for fractional levels
    as :class:`vaecodec.quality.QualityScale` says.

    Level ``i`` (0-based) is trained with rate-distortion weight ``lambdas[i]``. Gains are stored as
    logarithms so that they stay positive and interpolate geometrically. They are initialised to
    ``sqrt(lambda / lambda_ref)``, the step-size scaling that MSE-optimal quantization follows, so
    that the levels are spread in rate from the first training step.
    """

    def __init__(self, m: int, lambdas: list[float]) -> None:
        super().__init__()
        self.scale = QualityScale(lambdas)
        self.register_buffer("lambdas", torch.tensor(lambdas, dtype=torch.float32))
        ref = math.exp(sum(math.log(v) for v in lambdas) / len(lambdas))
        init = torch.tensor([0.5 * math.log(v / ref) for v in lambdas])[:, None].repeat(1, m)
        self.log_gain = nn.Parameter(init.clone())
        self.log_inv_gain = nn.Parameter(-init.clone())

    def lambda_at(self, level: torch.Tensor) -> torch.Tensor:
        """Rate-distortion weight of (fractional, possibly extrapolated) levels (B,), interpolated like
        the gains. Shape (B,)."""
        return self.scale.interpolate(self.lambdas.log()[:, None], level).flatten()

    def gain(self, level: torch.Tensor) -> torch.Tensor:
        """(B, M, 1, 1) gains of y at levels (B,)."""
        return self.scale.interpolate(self.log_gain, level)[:, :, None, None]

    def inverse_gain(self, level: torch.Tensor) -> torch.Tensor:
        return self.scale.interpolate(self.log_inv_gain, level)[:, :, None, None]
