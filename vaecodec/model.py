"""The trainable model: transforms + prior + quality gains, with the rate-distortion forward pass.

This is the float, differentiable form used by :mod:`vaecodec.train`. The coding path
(:mod:`vaecodec.codec`) uses the same g_a/g_s/h_a weights but the exported integer h_s and the
integer PMF tables (:mod:`vaecodec.weights`), never this module's float prior.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .prior import (
    NUM_SCALES,
    CheckerboardContext,
    FactorizedDensity,
    HyperAnalysis,
    HyperSynthesis,
    checkerboard_anchors,
    gaussian_bits,
    scale_of_index,
)
from .quantize import add_noise, ste_round
from .transforms import AnalysisTransform, PostFilter, QualityGains, SynthesisTransform

# Rate-distortion weights of the quality levels: loss = lambda * 255^2 * MSE + bpp.
# Eight levels, geometric from CompressAI's lowest MSE lambda (0.0018) to 0.1.
DEFAULT_LAMBDAS = [round(0.0018 * (0.1 / 0.0018) ** (i / 7), 5) for i in range(8)]
CONTEXTS = ("none", "checkerboard")
LIKELIHOOD_FLOOR = 1e-9  # z's likelihood in training (y's rate is computed in the log domain)


class _Bound(torch.autograd.Function):
    """clamp(x, lo, hi) whose gradient still flows where it would move x back inside [lo, hi].

    A plain clamp has zero gradient outside the range, and a straight-through clamp has gradient
    everywhere; with the latter the scale index of always-zero latents drifted to -5000 in the first
    run, from where a latent that later carries information could not climb back in useful time.
    (The same rule as CompressAI's ``LowerBound``, applied at both ends.)
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


def bound(x: torch.Tensor, lo: float, hi: float = math.inf) -> torch.Tensor:
    """Clamp to [lo, hi] with gradients that only pull stray values back in (see ``_Bound``)."""
    return _Bound.apply(x, lo, hi)


@dataclass
class ModelConfig:
    n: int = 64  # channels of the hidden layers of g_a/g_s and of z
    m: int = 128  # channels of y
    lambdas: list[float] = field(default_factory=lambda: list(DEFAULT_LAMBDAS))
    # "checkerboard": a context model on top of the hyperprior (prior.CheckerboardContext), coded in
    # two passes (codec.py, docs/format.md)
    context: str = "none"
    # channels of the post-filter on g_s's output (transforms.PostFilter); 0: none
    postfilter: int = 0

    def __post_init__(self) -> None:
        if self.context not in CONTEXTS:
            raise ValueError(f"unknown context model {self.context!r} (known: {', '.join(CONTEXTS)})")

    def to_dict(self) -> dict:
        """The config as stored in checkpoints and weights files. ``context`` is left out when it is
        "none" (and ``postfilter`` when 0), so the plain hyperprior's config (and with it the model
        id of its weights) reads as it did before context models (and post-filters) existed."""
        d = asdict(self)
        if self.context == "none":
            del d["context"]
        if not self.postfilter:  # likewise for models without a post-filter
            del d["postfilter"]
        return d


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
        self.context = CheckerboardContext(m) if config.context == "checkerboard" else None
        self.post = PostFilter(config.postfilter) if config.postfilter else None

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) in [0, 1], H and W multiples of 64; level: (B,) float quality levels.

        In training mode the rate uses additive noise; in eval mode it is the exact rate of the
        rounded latents under the float prior (what an ideal coder would spend). Under autocast
        only the transforms g_a/g_s run in reduced precision: h_a, h_s and the rate are computed in
        float32, because they decide probabilities and the mean is rounded against (bfloat16 keeps
        8 significant bits, so a mean of 10 would move in steps of 1/16).
        """
        y = (self.g_a(x) * self.gains.gain(level)).float()
        with torch.autocast(x.device.type, enabled=False):
            z = self.h_a(y)
            z_hat = ste_round(z)
            z_lik = self.z_density.likelihood(add_noise(z) if self.training else z_hat)
            mean, t = self.h_s(z_hat)
            if self.context is not None:
                anchors = checkerboard_anchors(*y.shape[2:], device=y.device)
                y_hat_anchors = (ste_round(y - mean) + mean) * anchors
                mean_c, t_c = self.context(y_hat_anchors, mean, t)
                mean, t = torch.where(anchors, mean, mean_c), torch.where(anchors, t, t_c)
            scale = scale_of_index(bound(t, 0, NUM_SCALES - 1))
            y_hat = ste_round(y - mean) + mean
            y_bits = gaussian_bits(add_noise(y) if self.training else y_hat, mean, scale)
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
        Under :meth:`rd_loss` a level weighs lambda * MSE, for hp128cb-v4 on Kodak 8 times more at
        level 7 than at level 0 (more still below), and a post-filter trained on it went where it
        gains least (docs/training.md)."""
        return (10 * torch.log10(out["mse"].clamp(min=1e-10))).mean()


def load_checkpoint(path: Path) -> tuple[VAEModel, dict]:
    """The model of a training checkpoint (or ``--slim`` copy) and the checkpoint itself. The EMA
    weights are loaded when the run kept them, since those are the ones it validated and exports."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = VAEModel(ModelConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"])
    return model, ckpt
