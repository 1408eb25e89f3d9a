"""The learned prior: hyper-analysis h_a, hyper-synthesis h_s and the factorized density of z.

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

    @torch.no_grad()
    def to_integer(self) -> IntegerHyperSynthesis:
        """Post-training quantization into the exact integer network used for coding."""
        weights, biases, shifts = [], [], []
        frac_in = 0  # z symbols are integers
        for i, (layer, (_kind, _cin, cout, _k, _s)) in enumerate(zip(self.layers, self.spec, strict=True)):
            last = i == len(self.layers) - 1
            w = layer.weight.detach().double().cpu()
            b = layer.bias.detach().double().cpu()
            frac_w = WEIGHT_BITS - math.ceil(math.log2(float(w.abs().max()) + 1e-12))
            frac_w = max(frac_w, ACT_FRAC_BITS - frac_in, MEAN_FRAC_BITS - frac_in)  # shifts >= 0
            w_int = torch.round(w * 2.0**frac_w)
            b_int = torch.round(b * 2.0 ** (frac_w + frac_in))
            if last:
                # mean channels keep MEAN_FRAC_BITS, scale-index channels are plain integers
                shift = [frac_w + frac_in - MEAN_FRAC_BITS] * self.m + [frac_w + frac_in] * self.m
            else:
                shift = [frac_w + frac_in - ACT_FRAC_BITS] * cout
            weights.append(w_int.to(torch.int64))
            biases.append(b_int.to(torch.int64))
            shifts.append(torch.tensor(shift, dtype=torch.int64))
            frac_in = ACT_FRAC_BITS
        return IntegerHyperSynthesis(self.spec, weights, biases, shifts)


class IntegerHyperSynthesis(nn.Module):
    """Exact integer h_s: integer z symbols -> (mean_int, scale_index), bit-identical on any device.

    ``mean = mean_int / 2**MEAN_FRAC_BITS``; ``scale_index`` is in [0, NUM_SCALES).
    """

    def __init__(self, spec, weights, biases, shifts) -> None:
        super().__init__()
        self.spec = spec
        self.m = spec[-1][2] // 2
        for i, (w, b, s) in enumerate(zip(weights, biases, shifts, strict=True)):
            self.register_buffer(f"w{i}", w.to(torch.int64))
            self.register_buffer(f"b{i}", b.to(torch.int64))
            self.register_buffer(f"s{i}", s.to(torch.int64))
        self.check_exact()

    def params(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return getattr(self, f"w{i}"), getattr(self, f"b{i}"), getattr(self, f"s{i}")

    def check_exact(self) -> None:
        """Static proof that no accumulator can reach 2**53, whatever the input."""
        bound_in = Z_CLAMP
        for i, (kind, _cin, _cout, _k, _s) in enumerate(self.spec):
            w, b, _ = self.params(i)
            out_dim = 1 if kind == "deconv" else 0  # deconv weights are (in, out, k, k)
            fan = w.abs().sum(dim=[d for d in range(4) if d != out_dim])
            worst = int((fan * bound_in + b.abs()).max())
            if worst >= EXACT_LIMIT:
                raise ValueError(f"h_s layer {i}: accumulator bound {worst} is not exact in float64")
            bound_in = ACT_MAX_INT

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z: integer tensor (B, N, h, w). Returns int64 (mean_int, scale_index), (B, M, 4h, 4w)."""
        ctx = torch.backends.cudnn.flags(enabled=False)
        with ctx, torch.no_grad():
            x = z.to(torch.float64).clamp(-Z_CLAMP, Z_CLAMP)
            for i, (kind, _cin, _cout, k, s) in enumerate(self.spec):
                w, b, shift = self.params(i)
                w, b = w.to(x.device, torch.float64), b.to(x.device, torch.float64)
                acc = _apply(kind, x, w, b, k, s)
                scale = torch.exp2(-shift.to(x.device, torch.float64))[None, :, None, None]
                x = torch.floor(acc * scale + 0.5)
                if i < len(self.spec) - 1:
                    x = x.clamp(0, ACT_MAX_INT)
        mean = x[:, : self.m].clamp(-MEAN_CLAMP, MEAN_CLAMP).to(torch.int64)
        index = x[:, self.m :].clamp(0, NUM_SCALES - 1).to(torch.int64)
        return mean, index


def checkerboard_anchors(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 1, height, width) bool mask of the checkerboard's anchor positions, (i + j) even."""
    i = torch.arange(height, device=device)[:, None]
    j = torch.arange(width, device=device)[None, :]
    return ((i + j) % 2 == 0)[None, None]


class CheckerboardContext(nn.Module):
    """Checkerboard context model (He et al. 2021, "Checkerboard context model for efficient learned
    image compression"), in training form only: half of y (the anchors) is coded with h_s's
    parameters as now; the other half gets parameters refined from its decoded anchor neighbours.

    ``ctx`` is a 5x5 convolution over the decoded anchors (zero elsewhere, so no kernel mask is
    needed); ``params`` maps [ctx features, h_s mean, h_s scale index] through 1x1 layers with the
    same clipped activations as h_s to a correction of (mean, scale index), whose last layer starts
    at zero so training starts from the plain hyperprior. The structure (convolutions over values
    with 8 fractional bits, clipped activations) is the one the integer h_s uses, so an exact
    integer export is possible; it is not written yet, and :func:`vaecodec.weights.export_model`
    refuses context models until it is. Decoding would be two passes: anchors, then the rest.
    """

    def __init__(self, m: int) -> None:
        super().__init__()
        self.m = m
        self.ctx = nn.Conv2d(m, 2 * m, 5, padding=2)
        self.params = nn.ModuleList([nn.Conv2d(4 * m, 2 * m, 1), nn.Conv2d(2 * m, 2 * m, 1),
                                     nn.Conv2d(2 * m, 2 * m, 1)])
        with torch.no_grad():
            self.params[-1].weight.zero_()
            self.params[-1].bias.zero_()

    def forward(self, y_hat_anchors: torch.Tensor, mean: torch.Tensor, t: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Refined (mean, scale index) for every position; the caller keeps them at non-anchors."""
        x = torch.cat([self.ctx(y_hat_anchors), mean, t], dim=1)
        for i, layer in enumerate(self.params):
            x = layer(x)
            if i < len(self.params) - 1:
                x = x.clamp(0, ACT_MAX)
        return mean + x[:, : self.m], t + x[:, self.m :]


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
