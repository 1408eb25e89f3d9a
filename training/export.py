"""Between training and the codec: a trained model -> a weights file, and a weights file -> a
trainable model.

Export (:func:`export_model`) writes what :mod:`vaecodec.weights` reads: the float transforms, gains
and post-filter as trained; h_s and the context network quantized into their exact integer forms
(:meth:`training.prior.FixedPointTwin.to_integer`); the z density tabulated into one integer PMF per
channel (:func:`z_tables`) and the fixed zero-mean Gaussian tables of y (:func:`y_tables`).

The way back (:func:`init_from_weights`, what ``--init weights/NAME.safetensors`` runs) is for
fine-tuning a model whose training run is gone: the float parts are copied, h_s and the context are
dequantized (they re-export to the same integers), and since a weights file keeps only the z tables
of the z density, a density is refit to them. The refit density is close to the tables but not
equal, so the rebuilt checkpoint also carries the tables themselves (``z_tables``): a run that
keeps the z density frozen keeps them and exports them unchanged (``training.loop``), so a model
rebuilt and re-exported as it is gets back its own model id.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from vaecodec import weights
from vaecodec.entropy import TableSet, quantize_pmf
from vaecodec.model import load
from vaecodec.prior import scale_table

from .model import ModelConfig, VAEModel, load_checkpoint
from .prior import FactorizedDensity

Z_TABLE_RADIUS = 128  # z tables are tabulated over at most [-128, 128] before trimming
TAIL_TRIM = 2.0**-26  # bins whose cumulative mass from either end is below this go to the escape
Y_TABLE_SIGMAS = 7.0  # y tables cover mean +- 7 sigma (at least +-1)
FLOAT_PARTS = ("g_a", "g_s", "h_a", "gains", "post")  # stored as trained (float)
TABLE_FIELDS = ("offsets", "lengths", "pmfs")


def z_tables(model: VAEModel) -> TableSet:
    """Tabulate the learned z density per channel into integer PMFs (trimmed tails -> escape)."""
    pmf, tail = model.z_density.pmf_on_grid(Z_TABLE_RADIUS)
    tables = []
    for c in range(pmf.shape[0]):
        p = pmf[c]
        left = np.cumsum(p) + tail[c] / 2
        right = np.cumsum(p[::-1])[::-1] + tail[c] / 2
        keep = np.flatnonzero((left >= TAIL_TRIM) & (right >= TAIL_TRIM))
        lo, hi = (keep[0], keep[-1]) if len(keep) else (Z_TABLE_RADIUS, Z_TABLE_RADIUS)
        mass = p[lo : hi + 1]
        tables.append((int(lo) - Z_TABLE_RADIUS, quantize_pmf(mass, 1.0 - mass.sum())))
    return TableSet.from_tables(tables)


def y_tables() -> TableSet:
    """One zero-mean discretized Gaussian per scale of the fixed scale grid."""
    tables = []
    for sigma in scale_table():
        r = max(1, math.ceil(Y_TABLE_SIGMAS * sigma))
        k = torch.arange(-r, r + 1, dtype=torch.float64)
        p = torch.special.ndtr((k + 0.5) / sigma) - torch.special.ndtr((k - 0.5) / sigma)
        tail = 2 * float(torch.special.ndtr(torch.tensor(-(r + 0.5) / sigma, dtype=torch.float64)))
        tables.append((-r, quantize_pmf(p.numpy(), tail)))
    return TableSet.from_tables(tables)


def tables_state(tables: TableSet) -> dict[str, torch.Tensor]:
    """A TableSet as the tensors a checkpoint keeps (``z_tables``)."""
    return {k: torch.from_numpy(np.asarray(getattr(tables, k), dtype=np.int64).copy()) for k in TABLE_FIELDS}


def tables_from_state(state: dict[str, torch.Tensor]) -> TableSet:
    return TableSet(*(np.asarray(state[k], dtype=np.int64) for k in TABLE_FIELDS))


def export_model(model: VAEModel, path: str | os.PathLike, z: TableSet | None = None) -> bytes:
    """Write a trained model as a weights file; returns its model id. ``z``: the z tables to store
    instead of tabulating the model's z density (the tables a rebuilt model carries, see the
    module docstring)."""
    model = model.cpu().eval()
    tensors: dict[str, np.ndarray] = {}
    for part in FLOAT_PARTS:
        module = getattr(model, part)
        if module is not None:
            tensors.update({f"{part}.{k}": v.detach().float().contiguous().numpy()
                            for k, v in module.state_dict().items()})
    for prefix, net in (("hs", model.h_s), ("ctx", model.context)):
        if net is not None:
            tensors.update({f"{prefix}.{k}": v.numpy() for k, v in net.to_integer().state_dict().items()})
    for prefix, tables in (("z_tables", z if z is not None else z_tables(model)), ("y_tables", y_tables())):
        tensors.update({f"{prefix}.{k}": np.asarray(getattr(tables, k)) for k in TABLE_FIELDS})
    return weights.write(Path(path), model.config.to_dict(), tensors)


def export_checkpoint(ckpt_path: Path, out: Path) -> bytes:
    """Export a run's checkpoint (its EMA if it kept one, and the z tables it carries if any)."""
    model, ckpt = load_checkpoint(ckpt_path)
    which = "EMA" if ckpt.get("ema") is not None else "raw"
    z = tables_from_state(ckpt["z_tables"]) if ckpt.get("z_tables") is not None else None
    model_id = export_model(model, out, z)
    kept = ", the z tables it was initialised with" if z is not None else ""
    print(f"exported step {ckpt['step']} ({which} weights{kept}) to {out} (model id {model_id.hex()})")
    return model_id


def _fit_z_density(tables: TableSet, n: int, steps: int = 400) -> dict[str, torch.Tensor]:
    """A float z density whose bin masses match the integer z tables (maximum likelihood on the
    tables' own probabilities, escapes left out): the tables are all a weights file keeps of it.
    Seeded on its own, so every process of a DDP run refits the same density, and on one thread:
    its operations are too small to gain from more, and processes sharing the cores (torchrun on a
    CPU) would spend their time waiting on each other's threads."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        density = FactorizedDensity(n)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _fit(density, tables, n, steps)
    finally:
        torch.set_num_threads(threads)
    return density.state_dict()


def _fit(density: FactorizedDensity, tables: TableSet, n: int, steps: int) -> None:
    low = int(tables.offsets.min())
    width = int((tables.offsets + tables.lengths - 1).max()) - low
    target = torch.zeros(n, width, dtype=torch.float64)
    for c, (offset, q) in enumerate(zip(tables.offsets, tables.split(), strict=True)):
        target[c, offset - low : offset - low + len(q) - 1] = torch.from_numpy(q[:-1] / q.sum())
    grid = (torch.arange(width, dtype=torch.float32) + low).expand(n, width)[None, :, None, :]
    opt = torch.optim.Adam(density.parameters(), lr=0.02)
    for _ in range(steps):
        lik = density.likelihood(grid)[0, :, 0].clamp(min=1e-9)
        loss = -(target.float() * torch.log2(lik)).sum(dim=1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def init_from_weights(model: str | os.PathLike) -> dict:
    """A training checkpoint (``config``, ``model``, ``step`` 0, ``z_tables``) rebuilt from a weights
    file or a shipped model's name, for ``--init`` when the run that made the weights is gone (module
    docstring). VaecodecError in one line for a file that is not intact weights."""
    shipped = load(model, "cpu")
    trainable = VAEModel(ModelConfig(**shipped.config.to_dict()))
    source = {"g_a": shipped.g_a, "g_s": shipped.g_s, "h_a": shipped.latent.h_a, "gains": shipped.gains,
              "post": shipped.post}
    for part in FLOAT_PARTS:
        if getattr(trainable, part) is not None:
            getattr(trainable, part).load_state_dict(source[part].state_dict())
    trainable.h_s.load_integer(shipped.latent.h_s)
    if trainable.context is not None:
        trainable.context.load_integer(shipped.latent.context)
    z = shipped.latent.z_coder.tables
    trainable.z_density.load_state_dict(_fit_z_density(z, shipped.config.n))
    return {"config": shipped.config.to_dict(), "model": trainable.state_dict(), "step": 0,
            "z_tables": tables_state(z), "weights": shipped.name, "model_id": shipped.model_id.hex()}
