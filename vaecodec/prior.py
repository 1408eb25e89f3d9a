"""The prior's exact integer networks: the hyper-synthesis h_s and the checkerboard context model.

Why an integer network
----------------------
Whatever decides a probability must be computed identically by encoder and decoder, or the ANS
decoder desynchronises and the file is lost. Float convolutions are not reproducible across devices,
thread counts or memory layouts (summation order, FMA, cuDNN's FFT/Winograd algorithms). So h_s is
exported as an *integer network* (Ballé, Johnston & Minnen 2019, "Integer networks for data
compression with latent-variable models"):

* input: the integer z symbols;
* each layer: integer weights ``W`` and biases ``b``, an integer accumulator ``acc = W * x + b``,
  rescaled by a power of two with round-half-up, ``floor(acc / 2**s + 1/2)``, then a clipped ReLU;
* outputs: a fixed-point integer mean (``MEAN_FRAC_BITS`` fractional bits) and an integer scale index
  into the fixed table of ``NUM_SCALES`` log-spaced Gaussian scales.

It is evaluated in float64, where every product and partial sum is an integer below 2**53 (checked
per layer when the network is built), so every summation order gives the exact same result and the
multiplication by ``2**-s`` is exact. On CUDA cuDNN is disabled for these calls because it may pick
FFT/Winograd algorithms whose intermediates are not integers.

Training uses float twins of these networks with the same architecture and the same clipped
activations (``training/prior.py``); the export quantizes them with 15-bit weights and 8 fractional
bits per activation, fine enough that the network's own error is negligible next to the 64-level
scale table. The checkerboard context network, which refines (mean, scale index) from decoded
neighbours, is an integer network built the same way (:class:`IntegerNetwork` holds what both share).
The layer specifications (:func:`hs_layers`, :func:`ctx_layers`) and the fixed-point constants here
are shared by both twins, so the two cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .transforms import tiled

# Fixed grid of Gaussian scales the y tables are built for (same range as CompressAI's).
SCALE_MIN = 0.11
SCALE_MAX = 256.0
NUM_SCALES = 64
SCALE_LOG_STEP = math.log(SCALE_MAX / SCALE_MIN) / (NUM_SCALES - 1)

ACT_FRAC_BITS = 8  # hidden activations are x_int / 2**8 ...
ACT_MAX = 16.0  # ... clipped to [0, 16]
ACT_MAX_INT = int(ACT_MAX * 2**ACT_FRAC_BITS)
MEAN_FRAC_BITS = 8  # the predicted mean is mean_int / 2**8
WEIGHT_BITS = 15  # largest |W_int| in a layer is below 2**15
Z_CLAMP = 4096  # h_s sees z symbols clamped to [-4096, 4096] (symbols themselves are coded exactly)
MEAN_CLAMP = 2**20
EXACT_LIMIT = 2**53
CTX_Y_MAX = 1024.0  # the checkerboard context sees decoded anchors clamped to +-1024 ...
CTX_FEATURE_MAX = 256.0  # ... and clamps its context features to +-256


def mean_value(mean_int: torch.Tensor) -> torch.Tensor:
    """The real (float64) mean of the prior's fixed-point ``mean_int``: what symbols are centred on."""
    return mean_int.double() / 2**MEAN_FRAC_BITS


def scale_of_index(t: torch.Tensor) -> torch.Tensor:
    """Gaussian scale for a (possibly fractional) scale index ``t`` in [0, NUM_SCALES - 1]."""
    return SCALE_MIN * torch.exp(t * SCALE_LOG_STEP)


def scale_table() -> np.ndarray:
    """The NUM_SCALES scales (float64) that the y entropy tables are tabulated for."""
    return SCALE_MIN * np.exp(np.arange(NUM_SCALES) * SCALE_LOG_STEP)


def hs_layers(n: int, m: int) -> list[tuple[str, int, int, int, int]]:
    """(kind, in, out, kernel, stride) of the three h_s layers, for the float and the integer twin."""
    hidden = m * 3 // 2
    return [("deconv", n, m, 5, 2), ("deconv", m, hidden, 5, 2), ("conv", hidden, 2 * m, 3, 1)]


def _apply(kind: str, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, k: int, s: int):
    if kind == "deconv":
        return F.conv_transpose2d(x, w, b, stride=s, padding=k // 2, output_padding=s - 1)
    return F.conv2d(x, w, b, stride=s, padding=k // 2)


class IntegerNetwork(nn.Module):
    """Exact integer layers (``spec``: (kind, in, out, kernel, stride) per layer) with buffers
    ``w{i}``, ``b{i}``, ``s{i}``; each layer computes ``floor((W * x + b) / 2**s + 1/2)`` in float64.

    Subclasses give the bound of each layer's input (``input_bounds``), from which the constructor
    proves that no accumulator can reach 2**53, and the forward pass that wires the layers.
    """

    input_bounds: list[int]

    def __init__(self, spec, weights, biases, shifts) -> None:
        super().__init__()
        self.spec = spec
        for i, (w, b, s) in enumerate(zip(weights, biases, shifts, strict=True)):
            for name, t in (("w", w), ("b", b), ("s", s)):
                self.register_buffer(f"{name}{i}", t.to(torch.int64))
                # and in float64, the type the layers compute in (exactly: every value is an integer
                # far below 2**53), once, rather than converted on every call, which cost as much as
                # the convolutions of a small image; not saved, it is the same numbers
                self.register_buffer(f"_{name}{i}", t.to(torch.int64).double(), persistent=False)
        self.check_exact()

    def params(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return getattr(self, f"w{i}"), getattr(self, f"b{i}"), getattr(self, f"s{i}")

    def _float_params(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return getattr(self, f"_w{i}"), getattr(self, f"_b{i}"), getattr(self, f"_s{i}")

    def check_exact(self) -> None:
        """Static proof that no accumulator can reach 2**53, whatever the input."""
        for i, ((kind, _cin, _cout, _k, _s), bound_in) in enumerate(zip(self.spec, self.input_bounds,
                                                                            strict=True)):
            w, b, _ = self.params(i)
            out_dim = 1 if kind == "deconv" else 0  # deconv weights are (in, out, k, k)
            fan = w.abs().sum(dim=[d for d in range(4) if d != out_dim])
            worst = int((fan * bound_in + b.abs()).max())
            if worst >= EXACT_LIMIT:
                raise ValueError(f"{type(self).__name__} layer {i}: accumulator bound {worst} is not "
                                 "exact in float64")

    def layer(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Layer i on float64 x holding integers. cuDNN must be off (see the module docstring)."""
        kind, _cin, _cout, k, s = self.spec[i]
        w, b, _ = self._float_params(i)
        return self.rescale(i, _apply(kind, x, w.to(x.device), b.to(x.device), k, s))

    def layers_from(self, first: int, x: torch.Tensor) -> torch.Tensor:
        """Layers ``first`` .. last on x, with the clipped activation between them (not after the
        last, whose outputs are the network's fixed-point results)."""
        for i in range(first, len(self.spec)):
            x = self.layer(i, x)
            if i < len(self.spec) - 1:
                x = x.clamp_(0, ACT_MAX_INT)  # in place, as in rescale
        return x

    def rescale(self, i: int, acc: torch.Tensor) -> torch.Tensor:
        """Layer i's accumulator to its output: ``floor(acc / 2**shift + 1/2)``, exact in float64.
        ``acc`` is overwritten (every caller's is a fresh sum): temporaries of a layer's full size are
        what the memory of the integer networks' tiles is made of."""
        shift = self._float_params(i)[2].to(acc.device)
        return acc.mul_(torch.exp2(-shift)[None, :, None, None]).add_(0.5).floor_()


class IntegerHyperSynthesis(IntegerNetwork):
    """Exact integer h_s: integer z symbols -> (mean_int, scale_index), bit-identical on any device.

    ``mean = mean_int / 2**MEAN_FRAC_BITS``; ``scale_index`` is in [0, NUM_SCALES).
    """

    input_bounds = [Z_CLAMP, ACT_MAX_INT, ACT_MAX_INT]

    def __init__(self, spec, weights, biases, shifts) -> None:
        self.m = spec[-1][2] // 2
        super().__init__(spec, weights, biases, shifts)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z: integer tensor (B, N, h, w). Returns int64 (mean_int, scale_index), (B, M, 4h, 4w)."""
        with torch.backends.cudnn.flags(enabled=False), torch.no_grad():
            x = self.layers_from(0, z.to(torch.float64).clamp(-Z_CLAMP, Z_CLAMP))
        mean = x[:, : self.m].clamp(-MEAN_CLAMP, MEAN_CLAMP).to(torch.int64)
        index = x[:, self.m :].clamp(0, NUM_SCALES - 1).to(torch.int64)
        return mean, index


def ctx_layers(m: int) -> list[tuple[str, int, int, int, int]]:
    """(kind, in, out, kernel, stride) of the checkerboard context: the 5x5 context convolution,
    then the three 1x1 layers over [context features, mean, scale index]."""
    return [("conv", m, m, 5, 1), ("conv", 3 * m, 2 * m, 1, 1), ("conv", 2 * m, 2 * m, 1, 1),
            ("conv", 2 * m, 2 * m, 1, 1)]


def checkerboard_anchors(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 1, height, width) bool mask of the checkerboard's anchor positions, (i + j) even."""
    i = torch.arange(height, device=device)[:, None]
    j = torch.arange(width, device=device)[None, :]
    return ((i + j) % 2 == 0)[None, None]


class IntegerCheckerboardContext(IntegerNetwork):
    """Exact integer form of :class:`CheckerboardContext`: decoded anchors and h_s's integer
    (mean, scale index) -> (mean, scale index) of every position (the caller keeps them at the
    non-anchors), bit-identical on any device.

    The decoded anchors enter as ``y_sym * 2**MEAN_FRAC_BITS + mean_int`` (exactly the value the
    decoder reconstructs, in fixed point), zero at non-anchors; the scale index enters with the
    same 8 fractional bits, so the first 1x1 layer sees one fixed-point format throughout.
    """

    def __init__(self, spec, weights, biases, shifts) -> None:
        self.m = spec[0][1]
        frac = 2**MEAN_FRAC_BITS
        self.input_bounds = [int(CTX_Y_MAX * frac), max(int(CTX_FEATURE_MAX * frac), MEAN_CLAMP,
                                                        (NUM_SCALES - 1) * frac), ACT_MAX_INT, ACT_MAX_INT]
        super().__init__(spec, weights, biases, shifts)

    def forward(self, y_sym: torch.Tensor, mean: torch.Tensor, index: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """y_sym: the y symbols ``round(y - mean)``, read at the anchors only (all the decoder knows
        at this point); mean, index: h_s's. All int64 (B, M, H, W), H and W even. Returns the
        (mean_int, scale_index) of every position: h_s's at the anchors, the context's elsewhere.

        Only the non-anchors are computed, in a (B, C, H/2, W) layout that holds the two non-anchor
        phases of the grid side by side (:meth:`_non_anchors`); the 1x1 layers do not care where a
        position sits, and the 5x5 context convolution is split by phase (:meth:`_context`)."""
        frac = 2**MEAN_FRAC_BITS
        with torch.backends.cudnn.flags(enabled=False), torch.no_grad():
            # y_sym is clamped first only so that the fixed-point value cannot overflow: beyond 2**21
            # the sum is clamped to the same bound either way
            y = y_sym.clamp(-(2**21), 2**21).to(torch.float64) * frac + mean.to(torch.float64)
            ctx = self._context(y.clamp(-CTX_Y_MAX * frac, CTX_Y_MAX * frac))
            mean_n = self._non_anchors(mean).to(torch.float64)
            index_n = self._non_anchors(index).to(torch.float64)
            x = self.layers_from(1, torch.cat([ctx.clamp(-CTX_FEATURE_MAX * frac, CTX_FEATURE_MAX * frac),
                                               mean_n.clamp(-MEAN_CLAMP, MEAN_CLAMP), index_n * frac], dim=1))
            refined = (mean_n + x[:, : self.m]).clamp(-MEAN_CLAMP, MEAN_CLAMP)
            refined_index = torch.floor((index_n * frac + x[:, self.m :]) / frac + 0.5)
            refined_index = refined_index.clamp(0, NUM_SCALES - 1)
        return (self._with_non_anchors(mean, refined.to(torch.int64)),
                self._with_non_anchors(index, refined_index.to(torch.int64)))

    @staticmethod
    def _non_anchors(t: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H/2, W): the (even row, odd column) positions, then the (odd row,
        even column) ones, side by side."""
        return torch.cat([t[..., 0::2, 1::2], t[..., 1::2, 0::2]], dim=-1)

    @staticmethod
    def _with_non_anchors(full: torch.Tensor, halves: torch.Tensor) -> torch.Tensor:
        """``full`` with its non-anchor positions replaced by ``halves`` (the inverse layout)."""
        out = full.clone()
        half = halves.shape[-1] // 2
        out[..., 0::2, 1::2] = halves[..., :half]
        out[..., 1::2, 0::2] = halves[..., half:]
        return out

    def _context(self, y: torch.Tensor) -> torch.Tensor:
        """The 5x5 context layer at the non-anchors, from the anchors, in the :meth:`_non_anchors`
        layout. A non-anchor at (i, j) sees anchors only through the 12 taps with an odd offset
        sum, so each of its two phases is the sum of two small convolutions, one over each anchor
        phase (even-even, odd-odd sub-grids) with the taps that reach it: a quarter of the work
        (and of the im2col memory) of the full convolution over a half-zero input, with the same
        integer sums (every partial sum is still one of the full layer's, so the 2**53 bound holds).
        """
        w, b, _ = self._float_params(0)
        w = w.to(y.device)
        even_odd, odd_even = w[..., 0::2, 1::2], w[..., 1::2, 0::2]  # 3x2 and 2x3 taps
        even, odd = y[..., 0::2, 0::2], y[..., 1::2, 1::2]  # the two anchor phases

        def conv(x: torch.Tensor, taps: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
            return F.conv2d(F.pad(x, pad), taps)  # pad: left, right, top, bottom

        at_even_row = conv(even, even_odd, (0, 1, 1, 1)) + conv(odd, odd_even, (1, 1, 1, 0))
        at_odd_row = conv(even, odd_even, (1, 1, 0, 1)) + conv(odd, even_odd, (1, 0, 1, 1))
        acc = torch.cat([at_even_row, at_odd_row], dim=-1)
        return self.rescale(0, acc + b.to(y.device)[None, :, None, None])


# ---- tiled evaluation ------------------------------------------------------------------------
#
# Both networks run tile by tile on large images (vaecodec.transforms.tiled), with halos that cover
# their receptive fields, so they give the same integers as on the whole image, for any tile size,
# in memory that follows the tile: float64 activations a few hundred channels deep would otherwise
# take several times the image's own size.
#
# h_s, in z cells: y row o (4 per z cell) reads the middle layer's rows o - 1 .. o + 1 (3x3), the
# first layer's rows ceil((o - 3) / 2) .. floor((o + 3) / 2) (a 5x5 stride-2 transposed convolution
# reaches input rows (p - 2) / 2 .. (p + 2) / 2 of its output row p), and so z rows r - 1 .. r + 2
# for the four y rows of z cell r: a halo of 2 z cells holds all of it. A tile holds about
# 4 * (HS_TILE + 2 * HS_HALO) y cells per side of activations, and the float64 convolutions unfold
# their inputs (im2col) into buffers k * k times larger: a few hundred MB at this size.
HS_TILE = 24
HS_HALO = 2
# The context, in y cells: a position reads the anchors within its 5x5 window and only itself after
# that (1x1 layers), so a halo of 2 holds all of it. Tile and halo are even, so every tile starts
# on an anchor and keeps the checkerboard's phase (which the network takes from its input's top-left
# corner).
CTX_TILE = 128
CTX_HALO = 2


def hs_tiled(h_s: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], z: torch.Tensor,
             tile: int | None = None, halo: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``h_s(z)`` (an :class:`IntegerHyperSynthesis`) tile by tile on z's grid, ``tile`` and ``halo``
    in z cells (HS_TILE and HS_HALO unless given)."""
    return tiled(h_s, z, 1, 4, tile or HS_TILE, HS_HALO if halo is None else halo)


def ctx_tiled(fn: Callable[..., tuple[torch.Tensor, ...]], *xs: torch.Tensor, tile: int | None = None,
              halo: int | None = None, out: tuple[torch.Tensor, ...] | None = None
              ) -> tuple[torch.Tensor, ...]:
    """``fn(*xs)`` tile by tile on y's grid, for an ``fn`` of y-grid tensors that reaches no further
    than the context network (an :class:`IntegerCheckerboardContext` itself, or a two-pass coding of
    which it is the only spatial step); ``tile`` and ``halo`` in y cells and even (CTX_TILE and
    CTX_HALO unless given); ``out`` as :func:`vaecodec.transforms.tiled` takes it."""
    tile, halo = tile or CTX_TILE, CTX_HALO if halo is None else halo
    if tile % 2 or halo % 2:
        raise ValueError(f"context tiles and halos must be even (keep the checkerboard's phase), got {tile} "
                         f"and {halo}")
    return tiled(fn, xs, 1, 1, tile, halo, out)


def gaussian_bits(y: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """-log2 of the mass of the unit bin around y under N(mean, scale): y's rate in training.

    Computed in the log domain (``log_ndtr``) rather than as ``log(ndtr(a) - ndtr(b))``: the
    difference underflows to 0 for a residual a few scales out, and a clamped likelihood there has
    no gradient, so a latent whose predicted scale is far too small would never be corrected.
    """
    v = (y - mean).abs()
    log_upper = torch.special.log_ndtr((0.5 - v) / scale)
    log_lower = torch.special.log_ndtr((-0.5 - v) / scale)
    # log(P(upper) - P(lower)) = log P(upper) + log(1 - P(lower)/P(upper)); the bin has width 1, so
    # lower < upper and the ratio stays below 1 (clamped against float rounding of tiny bins).
    log_mass = log_upper + torch.log(-torch.expm1((log_lower - log_upper).clamp(max=-1e-12)))
    return -log_mass / math.log(2)
