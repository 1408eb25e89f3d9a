"""Quantization of latents: the training-time surrogates and the inference-time rounding.

Training cannot differentiate through ``round``. Following common practice (Ballé et al. 2017;
Minnen & Singh 2020), the *rate* term sees ``y + u`` with ``u ~ U(-1/2, 1/2)`` (a smooth proxy whose
density matches the discretized one), while the *synthesis* sees the true rounded value with a
straight-through gradient, so the decoder is trained on exactly what it will receive.
At inference time only :func:`symbols` is used: plain rounding of ``y - mean``.
"""

from __future__ import annotations

import torch

# Latent values are clamped to this magnitude before rounding so that no input (even NaN/inf
# produced by a pathological image) can yield an unrepresentable symbol.
LATENT_CLAMP = 2.0**20


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """round(x) in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


def add_noise(x: torch.Tensor) -> torch.Tensor:
    """x + U(-1/2, 1/2): the training proxy for quantization in the rate term."""
    return x + torch.empty_like(x).uniform_(-0.5, 0.5)


def symbols(x: torch.Tensor, center: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Integer symbols round(x - center) as int64; NaN maps to 0, +-inf to the clamp bound."""
    v = torch.nan_to_num(x.double() - center, nan=0.0).clamp(-LATENT_CLAMP, LATENT_CLAMP)
    return torch.round(v).to(torch.int64)
