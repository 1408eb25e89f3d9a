"""The learned prior: hyper-analysis h_a, hyper-synthesis h_s, the optional checkerboard context
model and the factorized density of z.

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

Training uses a float h_s with the same architecture and the same clipped activations; the export
(:meth:`HyperSynthesis.to_integer`) quantizes it with 15-bit weights and 8 fractional bits per
activation, fine enough that the network's own error is negligible next to the 64-level scale table.
The checkerboard context network, which refines (mean, scale index) from decoded neighbours, is an
integer network built the same way (:class:`IntegerNetwork` holds what both share).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

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


class HyperAnalysis(nn.Sequential):
    """h_a: y -> z at 1/4 of y's resolution. Only the encoder runs it, so it may be float."""

    def __init__(self, n: int, m: int) -> None:
        super().__init__(
            nn.Conv2d(m, n, 3, padding=1), nn.LeakyReLU(),
            nn.Conv2d(n, n, 5, stride=2, padding=2), nn.LeakyReLU(),
            nn.Conv2d(n, n, 5, stride=2, padding=2),
        )


# (kind, kernel, stride) of the three h_s layers; shared by the float and the integer network.
def _hs_layers(n: int, m: int) -> list[tuple[str, int, int, int, int]]:
    hidden = m * 3 // 2
    return [("deconv", n, m, 5, 2), ("deconv", m, hidden, 5, 2), ("conv", hidden, 2 * m, 3, 1)]


def _apply(kind: str, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, k: int, s: int):
    if kind == "deconv":
        return F.conv_transpose2d(x, w, b, stride=s, padding=k // 2, output_padding=s - 1)
    return F.conv2d(x, w, b, stride=s, padding=k // 2)


class HyperSynthesis(nn.Module):
    """Float h_s used in training: z_hat -> (mean, scale index t), both (B, M, 4h, 4w).

    Hidden activations are clipped to [0, ACT_MAX] exactly as the integer network clips them.
    """

    def __init__(self, n: int, m: int) -> None:
        super().__init__()
        self.m = m
        self.spec = _hs_layers(n, m)
        self.layers = nn.ModuleList()
        for kind, cin, cout, k, s in self.spec:
            if kind == "deconv":
                self.layers.append(nn.ConvTranspose2d(cin, cout, k, s, k // 2, output_padding=s - 1))
            else:
                self.layers.append(nn.Conv2d(cin, cout, k, s, padding=k // 2))
        with torch.no_grad():  # start near sigma ~ 1.3 rather than at the table's edge
            self.layers[-1].bias[m:] += 20.0

    def forward(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = z_hat.clamp(-Z_CLAMP, Z_CLAMP)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = x.clamp(0, ACT_MAX)
        return x[:, : self.m], x[:, self.m :]

    def _fixed_point(self) -> list[tuple[nn.Module, int, list[int]]]:
        """Each layer with the fractional bits of its integer form's input and output channels: z
        symbols are integers, hidden activations carry ACT_FRAC_BITS, and the last layer's mean
        channels MEAN_FRAC_BITS while its scale indices are integers."""
        *hidden, last = self.layers
        fixed = [(layer, 0 if i == 0 else ACT_FRAC_BITS, [ACT_FRAC_BITS] * layer.out_channels)
                 for i, layer in enumerate(hidden)]
        return [*fixed, (last, ACT_FRAC_BITS, [MEAN_FRAC_BITS] * self.m + [0] * self.m)]

    @torch.no_grad()
    def to_integer(self) -> IntegerHyperSynthesis:
        """Post-training quantization into the exact integer network used for coding."""
        layers = [quantize_layer(*fixed) for fixed in self._fixed_point()]
        return IntegerHyperSynthesis(self.spec, *zip(*layers, strict=True))

    @torch.no_grad()
    def load_integer(self, net: IntegerHyperSynthesis) -> None:
        """The inverse of :meth:`to_integer`: take the weights an integer h_s holds."""
        for i, fixed in enumerate(self._fixed_point()):
            dequantize_layer(*fixed, *net.params(i))


def quantize_layer(layer: nn.Module, frac_in: int, frac_out: list[int]
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(integer weights, biases, per-channel shifts) of a float layer whose input carries
    ``frac_in`` fractional bits and whose output channel c is to carry ``frac_out[c]``: weights get
    the most fractional bits that keep them below 2**WEIGHT_BITS (more if a shift would be
    negative), the bias is scaled like the accumulator."""
    w = layer.weight.detach().double().cpu()
    b = layer.bias.detach().double().cpu()
    frac_w = WEIGHT_BITS - math.ceil(math.log2(float(w.abs().max()) + 1e-12))
    frac_w = max(frac_w, max(frac_out) - frac_in)  # shifts >= 0
    w_int = torch.round(w * 2.0**frac_w).to(torch.int64)
    b_int = torch.round(b * 2.0 ** (frac_w + frac_in)).to(torch.int64)
    return w_int, b_int, torch.tensor([frac_w + frac_in - f for f in frac_out], dtype=torch.int64)


def dequantize_layer(layer: nn.Module, frac_in: int, frac_out: list[int], w_int: torch.Tensor,
                     b_int: torch.Tensor, shifts: torch.Tensor) -> None:
    """Set a float layer to the values of its :func:`quantize_layer` form, whose weights carry
    ``shift + frac_out - frac_in`` fractional bits (the same for every output channel); quantizing
    the result again gives back the same integers."""
    frac_w = {int(s) + f - frac_in for s, f in zip(shifts, frac_out, strict=True)}
    if len(frac_w) != 1:
        raise ValueError("integer layer with inconsistent shifts")
    scale = 2.0 ** -frac_w.pop()
    layer.weight.copy_(w_int.double() * scale)
    layer.bias.copy_(b_int.double() * scale * 2.0**-frac_in)


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
            self.register_buffer(f"w{i}", w.to(torch.int64))
            self.register_buffer(f"b{i}", b.to(torch.int64))
            self.register_buffer(f"s{i}", s.to(torch.int64))
        self.check_exact()

    def params(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return getattr(self, f"w{i}"), getattr(self, f"b{i}"), getattr(self, f"s{i}")

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
        w, b, shift = self.params(i)
        acc = _apply(kind, x, w.to(x.device, torch.float64), b.to(x.device, torch.float64), k, s)
        return self.rescale(i, acc)

    def layers_from(self, first: int, x: torch.Tensor) -> torch.Tensor:
        """Layers ``first`` .. last on x, with the clipped activation between them (not after the
        last, whose outputs are the network's fixed-point results)."""
        for i in range(first, len(self.spec)):
            x = self.layer(i, x)
            if i < len(self.spec) - 1:
                x = x.clamp(0, ACT_MAX_INT)
        return x

    def rescale(self, i: int, acc: torch.Tensor) -> torch.Tensor:
        """Layer i's accumulator to its output: ``floor(acc / 2**shift + 1/2)``, exact in float64."""
        shift = self.params(i)[2].to(acc.device, torch.float64)
        return torch.floor(acc * torch.exp2(-shift)[None, :, None, None] + 0.5)


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


def _ctx_layers(m: int) -> list[tuple[str, int, int, int, int]]:
    """(kind, in, out, kernel, stride) of the checkerboard context: the 5x5 context convolution,
    then the three 1x1 layers over [context features, mean, scale index]."""
    return [("conv", m, m, 5, 1), ("conv", 3 * m, 2 * m, 1, 1), ("conv", 2 * m, 2 * m, 1, 1),
            ("conv", 2 * m, 2 * m, 1, 1)]


def checkerboard_anchors(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 1, height, width) bool mask of the checkerboard's anchor positions, (i + j) even."""
    i = torch.arange(height, device=device)[:, None]
    j = torch.arange(width, device=device)[None, :]
    return ((i + j) % 2 == 0)[None, None]


class CheckerboardContext(nn.Module):
    """Checkerboard context model (He et al. 2021, "Checkerboard context model for efficient learned
    image compression"): half of y (the anchors) is coded with h_s's parameters as before; the other
    half gets parameters refined from its decoded anchor neighbours. Decoding is two passes:
    anchors, then the rest.

    ``ctx`` is a 5x5 convolution over the decoded anchors (zero elsewhere, so no kernel mask is
    needed) to M features (He et al. use 2M; M halves the context's weights, 1.4 M parameters at
    M=192, so that a model with it fits the 40 MB the shipped weights may take in all). ``params``
    maps [ctx features, h_s mean, h_s scale index] through 1x1 layers with the same clipped
    activations as h_s to a correction of (mean, scale index), whose last layer starts at zero so
    training starts from the plain hyperprior. For coding it is exported, like h_s, as an exact
    integer network (:meth:`to_integer`).
    """

    def __init__(self, m: int) -> None:
        super().__init__()
        self.m = m
        convs = [nn.Conv2d(cin, cout, k, padding=k // 2) for _kind, cin, cout, k, _s in _ctx_layers(m)]
        self.ctx = convs[0]
        self.params = nn.ModuleList(convs[1:])
        with torch.no_grad():
            self.params[-1].weight.zero_()
            self.params[-1].bias.zero_()

    def forward(self, y_hat_anchors: torch.Tensor, mean: torch.Tensor, t: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Refined (mean, scale index) for every position; the caller keeps them at non-anchors.

        Every input and the context features are clamped to the ranges the integer network can hold
        (see ``CTX_Y_MAX``): the clamps almost never act, but they make the float network the exact
        function the integer one approximates.
        """
        ctx = self.ctx(y_hat_anchors.clamp(-CTX_Y_MAX, CTX_Y_MAX)).clamp(-CTX_FEATURE_MAX, CTX_FEATURE_MAX)
        mean_in = mean.clamp(-MEAN_CLAMP / 2**MEAN_FRAC_BITS, MEAN_CLAMP / 2**MEAN_FRAC_BITS)
        x = torch.cat([ctx, mean_in, t.clamp(0, NUM_SCALES - 1)], dim=1)
        for i, layer in enumerate(self.params):
            x = layer(x)
            if i < len(self.params) - 1:
                x = x.clamp(0, ACT_MAX)
        return mean + x[:, : self.m], t + x[:, self.m :]

    def _fixed_point(self) -> list[tuple[nn.Module, int, list[int]]]:
        """Each layer with the fractional bits of its integer form's input and output channels:
        every input and every activation carries MEAN_FRAC_BITS (= ACT_FRAC_BITS), and so do both
        halves of the output, the mean correction and the scale-index correction."""
        return [(layer, MEAN_FRAC_BITS, [MEAN_FRAC_BITS] * layer.out_channels)
                for layer in (self.ctx, *self.params)]

    @torch.no_grad()
    def to_integer(self) -> IntegerCheckerboardContext:
        """Post-training quantization into the exact integer network used for coding."""
        layers = [quantize_layer(*fixed) for fixed in self._fixed_point()]
        return IntegerCheckerboardContext(_ctx_layers(self.m), *zip(*layers, strict=True))

    @torch.no_grad()
    def load_integer(self, net: IntegerCheckerboardContext) -> None:
        """The inverse of :meth:`to_integer`: take the weights an integer context network holds."""
        for i, fixed in enumerate(self._fixed_point()):
            dequantize_layer(*fixed, *net.params(i))


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
        w, b, _ = self.params(0)
        w = w.to(y.device, torch.float64)
        even_odd, odd_even = w[..., 0::2, 1::2], w[..., 1::2, 0::2]  # 3x2 and 2x3 taps
        even, odd = y[..., 0::2, 0::2], y[..., 1::2, 1::2]  # the two anchor phases

        def conv(x: torch.Tensor, taps: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
            return F.conv2d(F.pad(x, pad), taps)  # pad: left, right, top, bottom

        at_even_row = conv(even, even_odd, (0, 1, 1, 1)) + conv(odd, odd_even, (1, 1, 1, 0))
        at_odd_row = conv(even, odd_even, (1, 1, 0, 1)) + conv(odd, even_odd, (1, 0, 1, 1))
        acc = torch.cat([at_even_row, at_odd_row], dim=-1)
        return self.rescale(0, acc + b.to(y.device, torch.float64)[None, :, None, None])


class FactorizedDensity(nn.Module):
    """Per-channel learned density of z (Ballé et al. 2018, appendix 6.1).

    A small monotone network per channel models the CDF; the probability of an integer bin is the CDF
    difference across it. Used only in training: for coding, the density is tabulated once at export
    time into integer PMFs (:meth:`tabulate`) that ship with the weights.
    """

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def _cdf_logits(self, x: torch.Tensor) -> torch.Tensor:
        """x: (C, 1, K) -> logits of the CDF at x, (C, 1, K)."""
        for i, (mat, bias) in enumerate(zip(self.matrices, self.biases, strict=True)):
            x = torch.matmul(F.softplus(mat), x) + bias
            if i < len(self.factors):
                x = x + torch.tanh(self.factors[i]) * torch.tanh(x)
        return x

    def likelihood(self, z: torch.Tensor) -> torch.Tensor:
        """Probability mass of the unit bin around each value of z, (B, C, h, w)."""
        b, c, h, w = z.shape
        flat = z.permute(1, 0, 2, 3).reshape(c, 1, -1)
        lower = self._cdf_logits(flat - 0.5)
        upper = self._cdf_logits(flat + 0.5)
        sign = -torch.sign(lower + upper).detach()  # evaluate in the tail that is numerically safe
        lik = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()
        return lik.reshape(c, b, h, w).permute(1, 0, 2, 3)

    @torch.no_grad()
    def pmf_on_grid(self, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """Bin probabilities for integers -radius..radius per channel, and the tail mass outside."""
        c = self.matrices[0].shape[0]
        grid = torch.arange(-radius, radius + 2, dtype=torch.float32) - 0.5
        cdf = torch.sigmoid(self._cdf_logits(grid.repeat(c, 1, 1))).double()[:, 0]
        pmf = (cdf[:, 1:] - cdf[:, :-1]).clamp(min=0)
        tail = (cdf[:, 0] + 1 - cdf[:, -1]).clamp(min=0)
        return pmf.numpy(), tail.numpy()


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
