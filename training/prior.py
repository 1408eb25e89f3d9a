"""The float prior that training optimizes, and its export to the runtime's exact integer networks.

The codec computes every probability with integer networks (:mod:`vaecodec.prior` says why). Those
cannot be trained, so training uses float twins with the same layers (``hs_layers``, ``ctx_layers``)
and the same clipped activations; after training, :meth:`FixedPointTwin.to_integer` quantizes a twin
into the integer network the weights file stores, and :meth:`FixedPointTwin.load_integer` goes back
(how ``--init`` rebuilds a trainable model from a weights file). What the twins share, the layer
construction and the two conversions, is written once in :class:`FixedPointTwin`; each network only
says its layers, the fixed-point format of each layer's input and outputs, and its integer class.

The z density (:class:`FactorizedDensity`) has no integer twin: the export tabulates it into the
integer z tables.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vaecodec.prior import (
    ACT_FRAC_BITS,
    ACT_MAX,
    CTX_FEATURE_MAX,
    CTX_Y_MAX,
    MEAN_CLAMP,
    MEAN_FRAC_BITS,
    NUM_SCALES,
    WEIGHT_BITS,
    Z_CLAMP,
    IntegerCheckerboardContext,
    IntegerHyperSynthesis,
    IntegerNetwork,
    checkerboard_anchors,
    ctx_layers,
    hs_layers,
)

# A layer's fixed point: (the layer, fractional bits of its input, fractional bits of each output)
FixedPoint = tuple[nn.Module, int, list[int]]


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


def make_layer(kind: str, cin: int, cout: int, k: int, s: int) -> nn.Module:
    """The float layer of one (kind, in, out, kernel, stride) entry of a layer specification, with
    the padding the integer network applies (``vaecodec.prior._apply``)."""
    if kind == "deconv":
        return nn.ConvTranspose2d(cin, cout, k, s, k // 2, output_padding=s - 1)
    return nn.Conv2d(cin, cout, k, s, padding=k // 2)


class FixedPointTwin(nn.Module):
    """A float network with an exact integer twin in the runtime: the export (:meth:`to_integer`)
    and its inverse (:meth:`load_integer`).

    Subclasses set ``spec`` (the layer specification both twins are built from) and
    ``integer_class``, and say in :meth:`fixed_point` which float layer is which integer layer and
    in which fixed-point formats its input and outputs are.
    """

    spec: list[tuple[str, int, int, int, int]]
    integer_class: type[IntegerNetwork]

    def fixed_point(self) -> list[FixedPoint]:
        raise NotImplementedError

    @torch.no_grad()
    def to_integer(self) -> IntegerNetwork:
        """Post-training quantization into the exact integer network used for coding."""
        layers = [quantize_layer(*fixed) for fixed in self.fixed_point()]
        return self.integer_class(self.spec, *zip(*layers, strict=True))

    @torch.no_grad()
    def load_integer(self, net: IntegerNetwork) -> None:
        """The inverse of :meth:`to_integer`: take the weights an integer network holds."""
        for i, fixed in enumerate(self.fixed_point()):
            dequantize_layer(*fixed, *net.params(i))


class HyperSynthesis(FixedPointTwin):
    """Float h_s used in training: z_hat -> (mean, scale index t), both (B, M, 4h, 4w).

    Hidden activations are clipped to [0, ACT_MAX] exactly as the integer network clips them.
    """

    integer_class = IntegerHyperSynthesis

    def __init__(self, n: int, m: int) -> None:
        super().__init__()
        self.m = m
        self.spec = hs_layers(n, m)
        self.layers = nn.ModuleList([make_layer(*layer) for layer in self.spec])
        with torch.no_grad():  # start near sigma ~ 1.3 rather than at the table's edge
            self.layers[-1].bias[m:] += 20.0

    def forward(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = z_hat.clamp(-Z_CLAMP, Z_CLAMP)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = x.clamp(0, ACT_MAX)
        return x[:, : self.m], x[:, self.m :]

    def fixed_point(self) -> list[FixedPoint]:
        """z symbols are integers, hidden activations carry ACT_FRAC_BITS, and the last layer's mean
        channels MEAN_FRAC_BITS while its scale indices are integers."""
        *hidden, last = self.layers
        fixed = [(layer, 0 if i == 0 else ACT_FRAC_BITS, [ACT_FRAC_BITS] * layer.out_channels)
                 for i, layer in enumerate(hidden)]
        return [*fixed, (last, ACT_FRAC_BITS, [MEAN_FRAC_BITS] * self.m + [0] * self.m)]


class CheckerboardContext(FixedPointTwin):
    """Checkerboard context model (He et al. 2021, "Checkerboard context model for efficient learned
    image compression"): half of y (the anchors) is coded with h_s's parameters; the other half gets
    parameters refined from its decoded anchor neighbours. The coding order is the runtime's
    :func:`vaecodec.latent_codec.two_pass`, which training runs with this network in place of the
    integer one.

    ``ctx`` is a 5x5 convolution over the decoded anchors (zero elsewhere, so no kernel mask is
    needed) to M features (He et al. use 2M; M halves the context's weights, so that a model with it
    stays small). ``params`` maps [ctx features, h_s mean, h_s scale index] through 1x1 layers with
    the same clipped activations as h_s to a correction of (mean, scale index), whose last layer
    starts at zero so training starts from the plain hyperprior.
    """

    integer_class = IntegerCheckerboardContext

    def __init__(self, m: int) -> None:
        super().__init__()
        self.m = m
        self.spec = ctx_layers(m)
        convs = [make_layer(*layer) for layer in self.spec]
        self.ctx = convs[0]
        self.params = nn.ModuleList(convs[1:])
        with torch.no_grad():
            self.params[-1].weight.zero_()
            self.params[-1].bias.zero_()

    def forward(self, sym: torch.Tensor, mean: torch.Tensor, t: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, scale index) of every position, as ``two_pass`` asks of a context: h_s's at the
        anchors, refined elsewhere. ``sym``: the (rounded, float) symbols of the parts coded so far,
        zero elsewhere; the network sees the decoded anchors ``(sym + mean) * anchors``.

        Every input and the context features are clamped to the ranges the integer network can hold
        (see ``CTX_Y_MAX``): the clamps almost never act, but they make the float network the exact
        function the integer one approximates.
        """
        anchors = checkerboard_anchors(*sym.shape[2:], device=sym.device)
        y_hat = ((sym + mean) * anchors).clamp(-CTX_Y_MAX, CTX_Y_MAX)
        ctx = self.ctx(y_hat).clamp(-CTX_FEATURE_MAX, CTX_FEATURE_MAX)
        mean_in = mean.clamp(-MEAN_CLAMP / 2**MEAN_FRAC_BITS, MEAN_CLAMP / 2**MEAN_FRAC_BITS)
        x = torch.cat([ctx, mean_in, t.clamp(0, NUM_SCALES - 1)], dim=1)
        for i, layer in enumerate(self.params):
            x = layer(x)
            if i < len(self.params) - 1:
                x = x.clamp(0, ACT_MAX)
        return torch.where(anchors, mean, mean + x[:, : self.m]), torch.where(anchors, t, t + x[:, self.m :])

    def fixed_point(self) -> list[FixedPoint]:
        """Every input and every activation carries MEAN_FRAC_BITS (= ACT_FRAC_BITS), and so do both
        halves of the output, the mean correction and the scale-index correction."""
        return [(layer, MEAN_FRAC_BITS, [MEAN_FRAC_BITS] * layer.out_channels)
                for layer in (self.ctx, *self.params)]


class FactorizedDensity(nn.Module):
    """Per-channel learned density of z (Ballé et al. 2018, appendix 6.1).

    A small monotone network per channel models the CDF; the probability of an integer bin is the CDF
    difference across it. Used only in training: for coding, the density is tabulated once at export
    time into integer PMFs (``training.export.z_tables``) that ship with the weights.
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
