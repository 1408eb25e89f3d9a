"""Quantization of latents: the rounding that turns float latents into the integer symbols coded.

Symbols are ``round(x - center)``, with the center the prior's exact mean (``vaecodec.prior``), so the
decoder reconstructs ``symbol + mean``. Training replaces this rounding by differentiable surrogates
(``training/model.py``); the runtime only ever rounds.
"""

from __future__ import annotations

import torch

# Latent values are clamped to this magnitude before rounding so that no input (even NaN/inf
# produced by a pathological image) can yield an unrepresentable symbol.
LATENT_CLAMP = 2.0**20


def symbols(x: torch.Tensor, center: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Integer symbols round(x - center) as int64; NaN maps to 0, +-inf to the clamp bound."""
    v = torch.nan_to_num(x.double() - center, nan=0.0).clamp(-LATENT_CLAMP, LATENT_CLAMP)
    return torch.round(v).to(torch.int64)
