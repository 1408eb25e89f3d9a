"""Encoder effort: rate-distortion optimization of one image's latents against the fixed decoder.

g_a is amortized: one pass predicts latents for any image, and what it predicts is not the best y
for *this* image under the decoder that will read it. With everything the decoder does held fixed
(g_s, the integer h_s, the integer context, the tables), the encoder can search for latents with a
lower ``lambda * 255^2 * MSE + bits`` for the image at hand, by gradient descent on y. Only the
encoder changes, so the file format and the decoder are untouched: a file made at any effort
decodes with any vaecodec that knows the model, bit-exactly on every device.

Rounding is what makes this hard: the decoder sees ``round(y - mean) + mean``, whose gradient is
zero. We use stochastic Gumbel annealing (Yang, Bamler & Mandt 2020, "Improving Inference for
Neural Image Compression"): each latent is a soft, random mix of its two nearest integers (relative
to its mean), weighted by closeness, with a temperature that anneals towards hard rounding, so that
the search can move a latent across a rounding boundary when that pays and ends on the values that
are actually coded. In a prototype the annealed rounding beat the straight-through estimator (round
forward, identity backward) and a rate taken on unrounded or noisy latents
(``bench/results/effort.md`` has the comparison).

What stays fixed, and why:

* z: it is computed once from g_a's y, and y's rate is measured against the (mean, scale index)
  that the integer h_s derives from it. z holds a small share of the bits, so a search over z was
  tried too (y held, h_s evaluated in real arithmetic without its roundings, z's cost read from its
  coding tables); it was worse as often as better and was dropped (``bench/results/effort.md``).
* The context's refinement of the non-anchors' (mean, scale index) is recomputed from the current
  anchors at every step, with the integer network the decoder runs, and treated as a constant: the
  search sees what each anchor costs and how it decodes, not how it changes its neighbours' tables.

Memory: a backward pass through g_s over a whole 12-megapixel image would need tens of GB, so the
search runs tile by tile on the latent grid (``TILE`` latents with a ``HALO`` on each side, which
covers g_s's and the context's reach). Each tile moves only its own latents, scoring the distortion
of its own pixels; the halo holds the neighbours as they stand, refined already or not yet.
Padding pixels (beyond the image) carry no distortion, so latents that only draw padding are free to
become as cheap as possible.

Randomness comes from generators seeded per image, so an image encodes to the same file every time
on the same device, alone or in a batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .model import Model
from .prior import gaussian_bits, mean_value, scale_of_index
from .quality import EFFORT_STEPS
from .transforms import tiles

LEARNING_RATE = 0.01  # Adam, on y (whose quantization step is 1)
TAU_START = 0.5  # Gumbel annealing temperature at the first step ...
TAU_DECAY = 3.0  # ... times exp(-TAU_DECAY * step / steps)
TAU_MIN = 0.02
TILE = 32  # latents per tile side (512 pixels); even, like HALO, to keep the checkerboard's phase
HALO = 4
SEED = 0
_EPS = 1e-5


def _soft_round(r: torch.Tensor, tau: float, generators: list[torch.Generator]) -> torch.Tensor:
    """A Gumbel-softmax mix of floor(r) and floor(r) + 1, each weighted by -atanh(distance) / tau;
    as tau -> 0 it becomes round(r). The gradient reaches r through the weights. Each image of the
    batch draws from its own generator, so an image gets the same noise alone or in a batch."""
    low = torch.floor(r).detach()
    frac = (r - low).clamp(_EPS, 1 - _EPS)
    logits = torch.stack([-torch.atanh(frac), -torch.atanh(1 - frac)]) / tau
    u = torch.stack([torch.rand(logits[:, i].shape, generator=g, device=r.device, dtype=r.dtype)
                     for i, g in enumerate(generators)], dim=1)
    gumbel = -torch.log(-torch.log(u.clamp(_EPS, 1 - _EPS)))
    return low + torch.softmax(logits + gumbel, dim=0)[1]


@torch.enable_grad()  # the codec calls this under no_grad
def refine(m: Model, x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, index: torch.Tensor,
           level: torch.Tensor, size: tuple[int, int], effort: int) -> torch.Tensor:
    """Latents y (B, M, h, w) refined for images x (B, 3, 16h, 16w) of true size ``size`` (w, h).

    ``mean`` and ``index`` are h_s's integer (mean, scale index) from the z that will be coded;
    ``level`` the quality levels (B,). Returns a new y; the caller quantizes it as usual.
    """
    steps = EFFORT_STEPS[effort]
    if steps <= 0:
        return y
    search = _Search(m, m.gains.lambda_at(level), level, steps,
                     [torch.Generator(device=y.device).manual_seed(SEED) for _ in range(len(y))])
    out = y.detach().clone()
    for t in tiles(*y.shape[2:], TILE, HALO):
        crop = (slice(None), slice(None), slice(t.a0, t.a1), slice(t.b0, t.b1))
        inner = (slice(None), slice(None), *t.inner())
        # the tile's own pixels that belong to the image (not padding)
        rows = slice((t.r0 - t.a0) * 16, min(t.r1 * 16, size[1]) - t.a0 * 16)
        cols = slice((t.c0 - t.b0) * 16, min(t.c1 * 16, size[0]) - t.b0 * 16)
        target = x[..., t.a0 * 16 : t.a1 * 16, t.b0 * 16 : t.b1 * 16][..., rows, cols]
        if target.numel():  # a tile that draws padding only stays as g_a made it
            tile = search.tile(out[crop], mean[crop], index[crop], inner, target)
            out[:, :, t.r0 : t.r1, t.c0 : t.c1] = tile[inner]
    return out


@dataclass
class _Search:
    """What every tile of one call shares: the model, per-image lambda and level, the step count and
    the per-image noise generators."""

    m: Model
    lam: torch.Tensor  # (B,)
    level: torch.Tensor  # (B,)
    steps: int
    generators: list[torch.Generator]

    def tile(self, y: torch.Tensor, mean_hs: torch.Tensor, index_hs: torch.Tensor, inner: tuple,
             target: torch.Tensor) -> torch.Tensor:
        """Adam on a tile's ``inner`` latents, scored on ``target``, the image pixels they own (the
        top-left corner of the tile's own area); the halo is held. Returns the tile's latents."""
        moving = torch.zeros_like(y, dtype=torch.bool)
        moving[inner] = True
        top, left = inner[2].start * 16, inner[3].start * 16
        pixels = (slice(top, top + target.shape[2]), slice(left, left + target.shape[3]))
        count = target.shape[2] * target.shape[3]
        y = y.clone().requires_grad_(True)
        adam = _Adam(y)
        for step in range(self.steps):
            with torch.no_grad():  # the decoder's own (mean, scale index), from the current anchors
                _, mean, index = self.m.latent.symbols(y, mean_hs, index_hs)
            mu = mean_value(mean).float()
            tau = max(TAU_START * math.exp(-TAU_DECAY * step / self.steps), TAU_MIN)
            r = y - mu  # the halo decodes as it stands: hard rounding
            y_hat = mu + torch.where(moving, _soft_round(r, tau, self.generators), torch.round(r.detach()))
            x_hat = self.m.synthesize(y_hat, self.level)[..., pixels[0], pixels[1]]
            sse = (x_hat - target).square().sum(dim=(1, 2, 3))
            bits = (gaussian_bits(y_hat, mu, scale_of_index(index.float())) * moving).sum(dim=(1, 2, 3))
            loss = ((self.lam * 255**2 * sse / 3 + bits) / count).sum()
            (grad,) = torch.autograd.grad(loss, y)
            adam.step(grad * moving)
        return y.detach()


class _Adam:
    """Adam (Kingma & Ba 2015, torch's default betas and eps) on one tensor, written out rather than
    ``torch.optim.Adam``: constructing a torch optimizer imports ``torch._dynamo``, which costs seconds
    once per process, a large part of a one-image ``vaecodec compress -e 1``. The
    same arithmetic as torch's single-tensor Adam, so the files are the same to the byte."""

    BETAS = (0.9, 0.999)
    EPS = 1e-8

    def __init__(self, y: torch.Tensor) -> None:
        self.y = y
        self.m = torch.zeros_like(y)
        self.v = torch.zeros_like(y)
        self.t = 0

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        b1, b2 = self.BETAS
        self.t += 1
        self.m.lerp_(grad, 1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (self.v.sqrt() / math.sqrt(1 - b2**self.t)).add_(self.EPS)
        self.y.addcdiv_(self.m, denom, value=-LEARNING_RATE / (1 - b1**self.t))
