"""Growing a trained model's latent: more y channels, the same function at step 0.

``python -m training --init hp128cbpf-v5 --grow-m 320 ...`` starts a run from a model with M = 320
built from the shipped one (M = 192), so the first training step already starts from the shipped
model's rate and distortion instead of from scratch. What the grown model does at step 0:

* g_a's new output channels are zero (weights and bias), so the new y channels are exactly 0;
* their prior is a mean of 0 and the smallest scale index (h_s's and the context's new output rows
  are zero, bias included), so each new symbol is 0 under the table that makes 0 cheapest (the
  integer tables still give the other entries a few counts in 2**24: a few millionths of a bit each);
* h_a reads them through zero weights, so z does not change;
* g_s reads them through random weights (a zero input times anything is zero, so the image does not
  change): if both sides of a new channel started at zero, neither would ever receive a gradient;
* the prior's networks grow with M (their widths follow ``vaecodec.prior.hs_layers`` and
  ``ctx_layers``): each new hidden unit gets random input weights (smaller than the layer's largest
  trained weight, so the export's fixed-point format of the layer, and with it every old integer
  weight, stays the same) and zero output weights, so it computes something that nothing reads yet
  and learns from the first step;
* the quality gains of a new channel start at the mean of the old channels' gains at each level.

Every weight that connects old units to old units is copied as it is. Parts whose shapes do not
depend on M (the rest of g_a and g_s, h_a's later layers, the z density, the post-filter) are
copied whole, and the z tables a rebuilt checkpoint carries stay valid (z is unchanged).
``tests/test_train_grow.py`` codes Kodak crops with the shipped and the grown model and compares
their symbols, pixels and file sizes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .model import ModelConfig, VAEModel


def _embed(new: nn.Module, old: nn.Module, outs: torch.Tensor, ins: torch.Tensor, fresh_out: bool,
           fresh_in: bool = False) -> None:
    """Write an old conv layer into a wider new one in place. ``outs``/``ins``: where the old output
    and input channels sit in the new layer. New output channels keep the new layer's random weights
    from every input if ``fresh_out`` (a hidden unit), else they are zero; old outputs read new inputs
    through random weights if ``fresh_in``, else through zeros. Random weights are scaled to at most
    half the old layer's largest one. Biases: old outputs copied, new ones zero."""
    transposed = isinstance(new, nn.ConvTranspose2d)
    w_new, w_old = new.weight.data, old.weight.data
    if transposed:  # (in, out, k, k) -> (out, in, k, k) views
        w_new, w_old = w_new.transpose(0, 1), w_old.transpose(0, 1)
    peak = float(w_new.abs().max())
    if peak > 0:
        w_new.mul_(min(1.0, 0.5 * float(w_old.abs().max()) / peak))
    new_out = torch.ones(w_new.shape[0], dtype=torch.bool)
    new_out[outs] = False
    new_in = torch.ones(w_new.shape[1], dtype=torch.bool)
    new_in[ins] = False
    if not fresh_out:
        w_new[new_out] = 0
    if not fresh_in:
        w_new[outs[:, None], new_in.nonzero()[:, 0][None, :]] = 0
    w_new[outs[:, None], ins[None, :]] = w_old
    new.bias.data.zero_()
    new.bias.data[outs] = old.bias.data


@torch.no_grad()
def grow_latent(ckpt: dict, m: int, seed: int = 0) -> dict:
    """A step-0 checkpoint of ``ckpt``'s model with ``m`` y channels, computing the same function
    (module docstring). ``ckpt``: a training checkpoint or one rebuilt from a weights file."""
    config = ModelConfig(**ckpt["config"])
    m0 = config.m
    if m <= m0:
        raise SystemExit(f"--grow-m {m}: the model already has M={m0}")
    old = VAEModel(config)
    old.load_state_dict(ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new = VAEModel(ModelConfig(**{**config.to_dict(), "m": m}))
    keep = old.state_dict()
    resized = {k for k, v in new.state_dict().items() if v.shape != keep[k].shape}
    new.load_state_dict({k: v for k, v in keep.items() if k not in resized}, strict=False)

    y = torch.arange(m0)
    # g_a's last convolution makes y; g_s's first and h_a's first read it
    _embed(new.g_a[-1], old.g_a[-1], y, torch.arange(config.n), fresh_out=False)
    _embed(new.g_s[0], old.g_s[0], torch.arange(config.n), y, fresh_out=False, fresh_in=True)
    _embed(new.h_a[0], old.h_a[0], torch.arange(config.n), y, fresh_out=False)
    # h_s: two hidden layers that widen with M, then (mean, scale index) of each channel
    params = torch.cat([y, m + y])
    h1, h2 = (torch.arange(layer.out_channels) for layer in old.h_s.layers[:2])
    _embed(new.h_s.layers[0], old.h_s.layers[0], h1, torch.arange(config.n), fresh_out=True)
    _embed(new.h_s.layers[1], old.h_s.layers[1], h2, h1, fresh_out=True)
    _embed(new.h_s.layers[2], old.h_s.layers[2], params, h2, fresh_out=False)
    if old.context is not None:  # features of y, then 1x1 layers over [features, mean, scale index]
        hidden, features = torch.arange(2 * m0), new.context.ctx.out_channels
        old_features = torch.arange(old.context.ctx.out_channels)
        _embed(new.context.ctx, old.context.ctx, old_features, y, fresh_out=True)
        _embed(new.context.params[0], old.context.params[0], hidden,
               torch.cat([y, features + y, features + m + y]), fresh_out=True)
        _embed(new.context.params[1], old.context.params[1], hidden, hidden, fresh_out=True)
        _embed(new.context.params[2], old.context.params[2], params, hidden, fresh_out=False)
    for name in ("log_gain", "log_inv_gain"):
        table = getattr(old.gains, name)
        getattr(new.gains, name).copy_(torch.cat([table, table.mean(1, keepdim=True).expand(-1, m - m0)], 1))
    unset = resized - {f"{prefix}.{suffix}" for prefix in (
        "g_a.6", "g_s.0", "h_a.0", "h_s.layers.0", "h_s.layers.1", "h_s.layers.2", "context.ctx",
        "context.params.0", "context.params.1", "context.params.2") for suffix in ("weight", "bias")}
    if unset - {"gains.log_gain", "gains.log_inv_gain"}:
        raise AssertionError(f"grow_latent does not know how to grow {sorted(unset)}")
    return {**{k: v for k, v in ckpt.items() if k not in ("model", "ema", "optimizer", "rng")},
            "config": new.config.to_dict(), "model": new.state_dict(), "step": 0, "grown_from_m": m0}


@torch.no_grad()
def relambda(ckpt: dict, lambdas: list[float]) -> dict:
    """``ckpt`` with its levels moved to new lambdas (a longer quality range, docs/training.md): each
    level's gains start where the old ladder puts its lambda, interpolated in log(lambda) and, past
    either end, extrapolated as :class:`vaecodec.quality.QualityScale` extrapolates levels, so a
    level whose lambda the model knows starts as that level."""
    try:
        config = ModelConfig(**{**ckpt["config"], "lambdas": list(lambdas)})
    except ValueError as exc:
        raise SystemExit(f"--lambdas: {exc}") from None
    old, new = np.log(ckpt["config"]["lambdas"]), np.log(lambdas)
    if not (np.diff(new) > 0).all():
        raise SystemExit("--lambdas: the levels' lambdas must increase")
    top = len(old) - 1
    step = (old[-1] - old[0]) / top  # the old ladder's mean log-step per level
    level = np.interp(new, old, np.arange(len(old)))  # the fractional old level of each new lambda
    level = np.where(new < old[0], (new - old[0]) / step, level)
    level = torch.from_numpy(np.where(new > old[-1], top + (new - old[-1]) / step, level))
    state = dict(ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"])
    model = VAEModel(ModelConfig(**ckpt["config"]))
    model.load_state_dict(state)
    for name in ("log_gain", "log_inv_gain"):
        table = getattr(model.gains, name).double()
        slope = (table[-1] - table[0]).mean() / top
        inside = model.gains.scale.interpolate(table, level.clamp(max=top)).log()
        state[f"gains.{name}"] = (inside + (level - top).clamp(min=0)[:, None] * slope).float()
    state["gains.lambdas"] = torch.tensor(lambdas, dtype=torch.float32)
    return {**{k: v for k, v in ckpt.items() if k not in ("model", "ema", "optimizer", "rng")},
            "config": config.to_dict(), "model": state, "step": 0}
