"""The trainable model: transforms + prior + quality gains, with the rate-distortion forward pass.

This is the float, differentiable form used by :mod:`vaecodec.train`. The coding path
(:mod:`vaecodec.codec`) uses the same g_a/g_s/h_a weights but the exported integer h_s and the
integer PMF tables (:mod:`vaecodec.weights`), never this module's float prior.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .prior import (
    NUM_SCALES,
    FactorizedDensity,
    HyperAnalysis,
    HyperSynthesis,
    gaussian_rate_likelihood,
    scale_of_index,
)
from .quantize import add_noise, ste_round
from .transforms import AnalysisTransform, QualityGains, SynthesisTransform

# Rate-distortion weights of the quality levels: loss = lambda * 255^2 * MSE + bpp.
# Eight levels, geometric from CompressAI's lowest MSE lambda (0.0018) to 0.1.
DEFAULT_LAMBDAS = [round(0.0018 * (0.1 / 0.0018) ** (i / 7), 5) for i in range(8)]
LIKELIHOOD_FLOOR = 1e-9


@dataclass
class ModelConfig:
    n: int = 64  # channels of the hidden layers of g_a/g_s and of z
    m: int = 128  # channels of y
    lambdas: list[float] = field(default_factory=lambda: list(DEFAULT_LAMBDAS))

    def to_dict(self) -> dict:
        return asdict(self)


class VAEModel(nn.Module):
    """Mean-scale hyperprior with per-quality gain vectors."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        n, m = config.n, config.m
        self.g_a = AnalysisTransform(n, m)
        self.g_s = SynthesisTransform(n, m)
        self.h_a = HyperAnalysis(n, m)
        self.h_s = HyperSynthesis(n, m)
        self.z_density = FactorizedDensity(n)
        self.gains = QualityGains(m, config.lambdas)

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) in [0, 1], H and W multiples of 64; level: (B,) float quality levels.

        In training mode the rate uses additive noise; in eval mode it is the exact rate of the
        rounded latents under the float prior (what an ideal coder would spend).
        """
        y = self.g_a(x) * self.gains.gain(level)
        z = self.h_a(y)
        z_hat = ste_round(z)
        z_lik = self.z_density.likelihood(add_noise(z) if self.training else z_hat)
        mean, t = self.h_s(z_hat)
        t = t + (t.clamp(0, NUM_SCALES - 1) - t).detach()
        scale = scale_of_index(t)
        y_hat = ste_round(y - mean) + mean
        y_lik = gaussian_rate_likelihood(add_noise(y) if self.training else y_hat, mean, scale)
        x_hat = self.g_s(y_hat * self.gains.inverse_gain(level))
        pixels = x.shape[2] * x.shape[3]
        bits = lambda lik: -torch.log2(lik.clamp(min=LIKELIHOOD_FLOOR)).sum(dim=(1, 2, 3))  # noqa: E731
        return {
            "x_hat": x_hat,
            "bpp_y": bits(y_lik) / pixels,
            "bpp_z": bits(z_lik) / pixels,
            "mse": (x_hat - x).square().mean(dim=(1, 2, 3)),
        }

    def rd_loss(self, out: dict[str, torch.Tensor], level: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of lambda(level) * 255^2 * MSE + bpp."""
        lam = self.gains.lambdas[level.round().long()]
        return (lam * 255**2 * out["mse"] + out["bpp_y"] + out["bpp_z"]).mean()
