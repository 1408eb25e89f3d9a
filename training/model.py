"""The trainable model: the runtime's transforms with the float prior, and the rate-distortion loss.

:class:`VAEModel` is the float, differentiable twin of :class:`vaecodec.model.Model`: the same g_a,
g_s, h_a, quality gains and post-filter modules (``vaecodec.transforms``), with the float h_s and
checkerboard context (:mod:`training.prior`) in place of their integer forms and a learned z density
in place of the z tables. y is coded in the runtime's order, :func:`vaecodec.latent_codec.two_pass`,
so the order is written once and training sees the parameters the decoder will derive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from vaecodec import model as runtime
from vaecodec.latent_codec import two_pass
from vaecodec.prior import NUM_SCALES, gaussian_bits, scale_of_index
from vaecodec.transforms import AnalysisTransform, HyperAnalysis, PostFilter, QualityGains, SynthesisTransform

from .prior import CheckerboardContext, FactorizedDensity, HyperSynthesis

# Rate-distortion weights of the quality levels: loss = lambda * 255^2 * MSE + bpp.
# Eight levels, geometric from CompressAI's lowest MSE lambda (0.0018) to 0.1.
DEFAULT_LAMBDAS = [round(0.0018 * (0.1 / 0.0018) ** (i / 7), 5) for i in range(8)]
LIKELIHOOD_FLOOR = 1e-9  # z's likelihood in training (y's rate is computed in the log domain)


@dataclass
class ModelConfig(runtime.ModelConfig):
    """The runtime's config (what the weights file stores) with the defaults of a new training run:
    the architecture of ``--N``/``--M`` and the default lambdas."""

    n: int = 64
    m: int = 128
    lambdas: list[float] = field(default_factory=lambda: list(DEFAULT_LAMBDAS))


class _Bound(torch.autograd.Function):
    """clamp(x, lo, hi) whose gradient still flows where it would move x back inside [lo, hi].

    A plain clamp has zero gradient outside the range, and a straight-through clamp has gradient
    everywhere; with the latter the scale index of always-zero latents drifted far below zero in
    the first run, from where a latent that later carries information could not climb back in
    useful time. (The same rule as CompressAI's ``LowerBound``, applied at both ends.)
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:  # noqa: ANN001
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        (x,) = ctx.saved_tensors
        inward = ((x >= ctx.lo) | (grad < 0)) & ((x <= ctx.hi) | (grad > 0))
        return grad * inward, None, None


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """round(x) in the forward pass, identity gradient in the backward pass: what the synthesis sees
    in training, so the decoder is trained on exactly the values it will receive."""
    return x + (torch.round(x) - x).detach()


def add_noise(x: torch.Tensor) -> torch.Tensor:
    """x + U(-1/2, 1/2): the training proxy for quantization in the rate term, whose density matches
    the discretized one (Ballé et al. 2017; Minnen & Singh 2020)."""
    return x + torch.empty_like(x).uniform_(-0.5, 0.5)


def bound(x: torch.Tensor, lo: float, hi: float = math.inf) -> torch.Tensor:
    """Clamp to [lo, hi] with gradients that only pull stray values back in (see ``_Bound``)."""
    return _Bound.apply(x, lo, hi)


class FloatLatents(NamedTuple):
    """What the float prior makes of y: z before and after rounding, the y symbols (rounded with a
    straight-through gradient, float) and the final (mean, scale index) of every position."""

    z: torch.Tensor
    z_hat: torch.Tensor
    sym: torch.Tensor
    mean: torch.Tensor
    t: torch.Tensor


class VAEModel(nn.Module):
    """Mean-scale hyperprior with per-quality gain vectors, an optional checkerboard context model
    and an optional post-filter. Module names match the weights file's tensor prefixes."""

    def __init__(self, config: runtime.ModelConfig) -> None:
        super().__init__()
        self.config = config
        n, m = config.n, config.m
        self.g_a = AnalysisTransform(n, m)
        self.g_s = SynthesisTransform(n, m)
        self.h_a = HyperAnalysis(n, m)
        self.h_s = HyperSynthesis(n, m)
        self.z_density = FactorizedDensity(n)
        self.gains = QualityGains(m, config.lambdas)
        self.context = CheckerboardContext(m) if config.context == "checkerboard" else None
        self.post = PostFilter(config.postfilter) if config.postfilter else None

    def latents(self, y: torch.Tensor) -> FloatLatents:
        """z, then y coded part by part in the runtime's order (``two_pass``), each part's symbols
        ``round(y - mean)`` under the parameters known when it is coded."""
        z = self.h_a(y)
        z_hat = ste_round(z)
        mean, t = self.h_s(z_hat)

        def code_part(mask: torch.Tensor, mean: torch.Tensor, _t: torch.Tensor) -> torch.Tensor:
            return ste_round(y - mean) * mask

        sym, mean, t = two_pass(self.context, mean, t, code_part)
        return FloatLatents(z, z_hat, sym, mean, t)

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) in [0, 1], H and W multiples of 64; level: (B,) float quality levels.

        In training mode the rate uses additive noise; in eval mode it is the exact rate of the
        rounded latents under the float prior (what an ideal coder would spend). Under autocast
        only the transforms g_a/g_s (and the post-filter) run in reduced precision: h_a, h_s, the
        context and the rate are computed in float32, because they decide probabilities and the
        mean is rounded against (bfloat16 keeps 8 significant bits, so a mean of 10 would move in
        steps of 1/16).
        """
        y = (self.g_a(x) * self.gains.gain(level)).float()
        with torch.autocast(x.device.type, enabled=False):
            lat = self.latents(y)
            z_lik = self.z_density.likelihood(add_noise(lat.z) if self.training else lat.z_hat)
            y_hat = lat.sym + lat.mean
            scale = scale_of_index(bound(lat.t, 0, NUM_SCALES - 1))
            y_bits = gaussian_bits(add_noise(y) if self.training else y_hat, lat.mean, scale)
            z_bits = -torch.log2(bound(z_lik, LIKELIHOOD_FLOOR))
        x_hat = self.g_s(y_hat * self.gains.inverse_gain(level))
        if self.post is not None:
            x_hat = self.post(x_hat, level)
        x_hat = x_hat.float()
        pixels = x.shape[2] * x.shape[3]
        return {
            "x_hat": x_hat,
            "bpp_y": y_bits.sum(dim=(1, 2, 3)) / pixels,
            "bpp_z": z_bits.sum(dim=(1, 2, 3)) / pixels,
            "mse": (x_hat - x).square().mean(dim=(1, 2, 3)),
        }

    def rd_loss(self, out: dict[str, torch.Tensor], level: torch.Tensor) -> torch.Tensor:
        """Batch mean of lambda * 255^2 * MSE + bpp, lambda interpolated at each (fractional) level."""
        lam = self.gains.lambda_at(level)
        return (lam * 255**2 * out["mse"] + out["bpp_y"] + out["bpp_z"]).mean()

    @staticmethod
    def psnr_loss(out: dict[str, torch.Tensor]) -> torch.Tensor:
        """Batch mean of -PSNR (dB, on [0, 1]): the loss for training parts that do not change the
        rate (a post-filter) with every quality level counted alike in dB, as BD-rate counts them.
        Under :meth:`rd_loss` a level weighs lambda * MSE, many times more at the top level than at
        the bottom one, and a post-filter trained on it went where it gains least (docs/training.md,
        hp128cbpf-v5)."""
        return (10 * torch.log10(out["mse"].clamp(min=1e-10))).mean()


def load_checkpoint(path: Path) -> tuple[VAEModel, dict]:
    """The model of a training checkpoint (or ``--slim`` copy) and the checkpoint itself. The EMA
    weights are loaded when the run kept them, since those are the ones it validated and exports."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = VAEModel(ModelConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"])
    return model, ckpt
