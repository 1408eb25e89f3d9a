"""Shipped weights: export from a training checkpoint, load for coding, and the model registry.

A weights file (``weights/<name>.pt``, loaded with ``torch.load(weights_only=True)``) holds:

* ``config``: architecture (n, m) and the per-level lambdas;
* the float g_a, g_s, h_a and quality-gain tensors;
* the exported *integer* h_s (``hs.*``: weights, biases, shifts) and, for models with the
  checkerboard context, the integer context network (``ctx.*``, the same layout);
* the integer PMF tables for z (one per channel) and y (one per scale index).

Everything that decides a probability is an integer in this file. The model id written into every
.vaez is the first 8 bytes of a SHA-256 over the config and all tensors (names, dtypes, shapes and
bytes) in their *canonical* dtypes (float32 for floats, int32 for the h_s weights, int64 for the
other integers), so re-saving the same values keeps the id, and any change to them changes it.

Stored dtypes are the smallest that hold the values exactly: float16 for float tensors whose every
value is a float16 (weights trained in bfloat16/float16 and brought back as float16 are), int16 for
the h_s weights (below 2**15 by construction). That halves a GPU-trained model's file; since the id
is taken over the canonical dtypes, a file re-stored this way keeps its id, and every .vaez made with
it still decodes to the same pixels.

A *decode-only* weights file (:func:`retire_encoder`) keeps everything a decoder needs and drops
g_a and h_a (a third of a model). It is how an old model stays in the package once a better one
replaces it: files made with it decode forever, while compressing with it is refused. Without g_a
the id cannot be recomputed, so such a file stores its model's id and, to catch damage, the
id-style digest of the tensors it kept. Its tensors are also compressed, each as its bytes split into
byte planes (every tensor element's first byte, then every second byte) and zlib-deflated
(``"storage": "zlib-planes"``; files of the earlier ``"zlib"`` storage, without the planes, still
load). The planes separate the low-entropy high bytes of float16 and int16 values from the
near-random low bytes, which zlib alone cannot: the shipped decode-only files came out 9 % smaller
than with plain zlib (21.5 -> 19.6 MB). Inflating costs 0.02-0.08 s on a 2-core machine, which a
retired model pays only when an old file asks for it, whereas the models that compress load on every
run and stay plain.

A decode-only file may also *borrow* tensors from another weights file beside it (``"borrows"``:
that model's name and id, and the tensor names; :func:`retire_encoder` with ``share_with``). A model
fine-tuned with part of its predecessor frozen (``train --freeze``) shares those tensors exactly, and
without borrowing each would be stored twice; that is what keeps the package under its weights budget
as models accumulate. A tensor that differs from its lender's namesake but has the same shape and
storage dtype is stored as the bitwise XOR of the two (``"xor"``: its name and dtype). A fine-tune
moves each weight by a few percent, so the two values mostly share their sign, exponent and top
mantissa bits: the XOR's high byte plane is almost all zeros and deflates to almost nothing (the
shipped hp128cb-v3 against hp128cb-v4: 9.2 -> 7.2 MB). XOR rather than a difference of values
because it is exact for every bit pattern with no arithmetic to reason about. A borrower checks its
lender's id and, as always, its own decoder digest over everything it uses (restored XORs
included), so a missing or changed lender is refused, never decoded with.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .entropy import TableCoder, TableSet, quantize_pmf
from .model import ModelConfig, VAEModel, load_checkpoint
from .prior import (
    FactorizedDensity,
    HyperAnalysis,
    IntegerCheckerboardContext,
    IntegerHyperSynthesis,
    _ctx_layers,
    _hs_layers,
    mean_value,
    scale_table,
)
from .quantize import symbols
from .transforms import AnalysisTransform, PostFilter, QualityGains, SynthesisTransform

DEFAULT_MODEL = "hp128cbpf-v5"
FILE_KIND = "vaecodec-weights"
Z_TABLE_RADIUS = 128  # z tables are tabulated over at most [-128, 128] before trimming
TAIL_TRIM = 2.0**-26  # bins whose cumulative mass from either end is below this go to the escape
Y_TABLE_SIGMAS = 7.0  # y tables cover mean +- 7 sigma (at least +-1)
INT_WEIGHTS = ("hs.w", "ctx.w")  # integer-network weights: canonical int32, stored int16
ENCODER_PARTS = ("g_a", "h_a")  # what a decode-only file leaves out
STORAGE = "zlib-planes"  # how a decode-only file stores its tensors (module docstring)
MAX_BORROW_DEPTH = 8  # a lender may borrow in turn, up to this far (a cycle is refused, never followed)


def weights_dir() -> Path:
    """Where the shipped weights live: the installed ``vaecodec.weights`` package, or, when running
    from a source checkout, the repository's ``weights/`` folder."""
    try:
        import vaecodec.weights_data as pkg  # installed wheel: weights/ maps to this package

        return Path(pkg.__path__[0])
    except ImportError:
        return Path(__file__).resolve().parent.parent / "weights"


def available_models() -> dict[str, Path]:
    return {p.stem: p for p in sorted(weights_dir().glob("*.pt"))}


def canonical(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors in the dtypes the model id is defined over (see the module docstring)."""
    def dtype(name: str, t: torch.Tensor) -> torch.dtype:
        if t.is_floating_point():
            return torch.float32
        return torch.int32 if name.startswith(INT_WEIGHTS) else torch.int64
    return {k: v.to(dtype(k, v)) for k, v in tensors.items()}


def compact(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors in the smallest dtypes that hold their values exactly, for storage."""
    out = {}
    for k, v in tensors.items():
        if v.is_floating_point() and torch.equal(v.half().to(v.dtype), v):
            v = v.half()
        elif k.startswith(INT_WEIGHTS) and int(v.abs().max()) < 2**15:
            v = v.to(torch.int16)
        out[k] = v
    return out


def model_id_of(config: dict, tensors: dict[str, torch.Tensor]) -> bytes:
    """Id of canonical tensors (:func:`canonical`)."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous().cpu()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.digest()[:8]


@dataclass
class LoadedModel:
    """Everything the codec needs from a weights file, on one device."""

    name: str
    model_id: bytes
    config: ModelConfig
    g_a: AnalysisTransform | None  # None (with h_a) in a decode-only file
    g_s: SynthesisTransform
    h_a: HyperAnalysis | None
    gains: QualityGains
    h_s: IntegerHyperSynthesis
    z_coder: TableCoder
    y_coder: TableCoder
    context: IntegerCheckerboardContext | None = None  # the checkerboard context, when the model has one
    post: PostFilter | None = None  # the post-filter on g_s's output, when the model has one

    @property
    def decode_only(self) -> bool:
        """A retired model (:func:`retire_encoder`): it decodes the files made with it, no more."""
        return self.g_a is None

    def y_params(self, y: torch.Tensor, mean: torch.Tensor, index: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """The (mean_int, scale index) the decoder will derive for every position of the float
        latents y, from h_s's: refined at the non-anchors by the context network from y's anchors
        (as coded, rounded against h_s's mean) when the model has one."""
        if self.context is None:
            return mean, index
        return self.context(symbols(y, mean_value(mean)), mean, index)

    def synthesize(self, y_hat: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """The decoded image (B, 3, 16h, 16w), not yet clamped, of latents y_hat (B, M, h, w) at
        quality levels ``level`` (B,): g_s after the inverse gain, then the post-filter if any."""
        x = self.g_s(y_hat * self.gains.inverse_gain(level))
        return x if self.post is None else self.post(x, level)

    def to(self, device: torch.device) -> LoadedModel:
        for module in (self.g_a, self.g_s, self.h_a, self.gains, self.h_s, self.context, self.post):
            if module is not None:
                module.to(device)
        # channels_last weights make oneDNN pick faster convolutions for the float transforms (Kodak
        # image, 1 thread: g_a 0.42 -> 0.33 s, g_s 0.58 -> 0.38 s), and the post-filter is one more;
        # h_s is integer-exact whatever the layout, and nothing else here is a convolution worth it
        for module in (self.g_a, self.g_s, self.post):
            if module is not None:
                module.to(memory_format=torch.channels_last)
        return self


def _tables_to_tensors(prefix: str, tables: TableSet) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": torch.from_numpy(getattr(tables, k).copy())
            for k in ("offsets", "lengths", "pmfs")}


def _tables_from_tensors(prefix: str, tensors: dict[str, torch.Tensor]) -> TableSet:
    keys = ("offsets", "lengths", "pmfs")
    return TableSet(*(tensors[f"{prefix}.{k}"].numpy().astype(np.int64) for k in keys))


def _sub(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


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


def export_model(model: VAEModel, path: Path, planes: bool = False) -> bytes:
    """Write a trained model as a shipped weights file (in byte planes with ``planes``, see
    :func:`save_weights`); returns its model id."""
    model = model.cpu().eval()
    tensors: dict[str, torch.Tensor] = {}
    for part in ("g_a", "g_s", "h_a", "gains", "post"):
        module = getattr(model, part)
        if module is not None:
            tensors.update({f"{part}.{k}": v.detach().float().clone()
                            for k, v in module.state_dict().items()})
    for prefix, net in (("hs", model.h_s), ("ctx", model.context)):
        if net is not None:
            tensors.update({f"{prefix}.{k}": v.clone() for k, v in net.to_integer().state_dict().items()})
    tensors.update(_tables_to_tensors("z_tables", z_tables(model)))
    tensors.update(_tables_to_tensors("y_tables", y_tables()))
    return save_weights(model.config.to_dict(), tensors, path, planes)


def save_weights(config: dict, tensors: dict[str, torch.Tensor], path: Path, planes: bool = False) -> bytes:
    """Write a weights file (atomically, tensors stored :func:`compact`); returns its model id.

    With ``planes`` the tensors are stored as the decode-only files store theirs (zlib-compressed
    byte planes): a fifth smaller for a model that compresses (hp128cb-v4: 17.2 -> 13.6 MB), for
    about 0.1 s more on every load, which is the price of fitting the weights budget
    (``weights/README.md``). The model id does not depend on the storage."""
    tensors = canonical(tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = {"storage": STORAGE, "tensors": _pack(tensors)} if planes else {"tensors": compact(tensors)}
    save_atomic({"kind": FILE_KIND, "config": config, **stored}, path)
    return model_id_of(config, tensors)


def retire_encoder(path: Path, out: Path, share_with: Path | None = None) -> bytes:
    """Write the decode-only copy of a weights file (see the module docstring) to ``out`` (which may
    be ``path``); returns the model id it keeps, the same as the full file's.

    A file that is decode-only already is re-stored (same id, current storage), so old files move to
    a new storage or take up borrowing with the same command. With ``share_with`` (a weights file in
    ``out``'s folder), every kept tensor equal to one of that file's is stored as borrowed from it,
    and every other one with a namesake of the same shape and storage dtype there as its bitwise XOR
    with that namesake (module docstring).
    """
    config, tensors, blob = read_weights(path)
    model_id = _verified_id(path, config, tensors, blob)
    kept = {k: v for k, v in tensors.items() if not k.startswith(tuple(p + "." for p in ENCODER_PARTS))}
    record = {"kind": FILE_KIND, "config": config, "storage": STORAGE, "model_id": model_id.hex(),
              "decoder_digest": model_id_of(config, kept).hex()}
    stored = kept
    if share_with is not None:
        if share_with.resolve().parent != out.resolve().parent:
            raise ValueError(f"{share_with} is not beside {out}: a model borrows only from its own folder")
        if share_with.resolve() == out.resolve():
            raise ValueError(f"{out} cannot borrow from itself")
        # a lender that borrows, however indirectly, from the file being written would close a cycle
        lent, lender_id = _read_lender(share_with, frozenset({out.resolve()}))
        same = sorted(k for k, v in kept.items()
                      if k in lent and lent[k].shape == v.shape and torch.equal(lent[k], v))
        own = compact({k: v for k, v in kept.items() if k not in same})
        base = compact({k: lent[k] for k, v in own.items() if k in lent and lent[k].shape == v.shape})
        xor = {k: str(v.dtype).removeprefix("torch.") for k, v in own.items()
               if k in base and base[k].dtype == v.dtype and v.element_size() in _BITS}
        record["borrows"] = {"model": share_with.stem, "model_id": lender_id.hex(), "tensors": same,
                             "xor": xor}
        stored = {k: _xor_bits(v, base[k]) if k in xor else v for k, v in own.items()}
    record["tensors"] = _pack(stored)
    save_atomic(record, out)
    return model_id


def _pack(tensors: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Each tensor in the :func:`compact` dtype as its zlib-compressed byte planes, with dtype and
    shape (the module docstring says why planes)."""
    out = {}
    for name, t in compact(tensors).items():
        a = t.contiguous().numpy()
        planes = a.view(np.uint8).reshape(-1, a.itemsize).T.tobytes()
        raw = zlib.compress(planes, 9)
        out[name] = {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                     "zlib": torch.frombuffer(bytearray(raw), dtype=torch.uint8)}
    return out


def _unpack(packed: dict[str, dict], planes: bool = True) -> dict[str, torch.Tensor]:
    out = {}
    for name, rec in packed.items():
        dtype = getattr(torch, rec["dtype"])
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"{name}: unknown dtype {rec['dtype']!r}")
        raw = zlib.decompress(rec["zlib"].numpy().tobytes())
        if planes:
            size = torch.empty((), dtype=dtype).element_size()
            raw = np.frombuffer(raw, dtype=np.uint8).reshape(size, -1).T.tobytes()
        out[name] = torch.frombuffer(bytearray(raw), dtype=dtype).reshape(rec["shape"])
    return out


def save_atomic(obj: dict, path: Path) -> None:
    """torch.save through a temporary file and a rename, so an interrupted write leaves no partial
    file (weights files here, checkpoints in train.py)."""
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def read_weights(path: Path, _seen: frozenset[Path] = frozenset(), _data: bytes | None = None
                 ) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """(config, canonical tensors, the whole blob) of a weights file, in any storage, with the
    tensors it borrows (module docstring) taken from its lender. ``_data``: the file's bytes, when
    the caller has read them already."""
    try:
        blob = torch.load(io.BytesIO(_data) if _data is not None else path, map_location="cpu",
                          weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read weights {path}: {exc}") from None
    if not isinstance(blob, dict) or blob.get("kind") != FILE_KIND:
        raise ValueError(f"{path} is not a vaecodec weights file")
    storage = blob.get("storage")
    if storage not in (None, "zlib", STORAGE):
        raise ValueError(f"{path} uses weights storage {storage!r}, which this vaecodec does not know "
                         "(a newer version wrote it)")
    damaged = (KeyError, TypeError, AttributeError, RuntimeError, ValueError, zlib.error)
    try:
        tensors = blob["tensors"] if storage is None else _unpack(blob["tensors"], storage == STORAGE)
        config = blob["config"]
        borrows = blob.get("borrows")
    except damaged as exc:
        raise _damaged(path, f"{type(exc).__name__}: {exc}") from None
    if borrows is not None:
        tensors = _borrowed(path, borrows, tensors, _seen | {path.resolve()})
    try:
        return config, canonical(tensors), blob
    except damaged as exc:
        raise _damaged(path, f"{type(exc).__name__}: {exc}") from None


def _damaged(path: Path, why: str) -> ValueError:
    """The one error for a weights file whose contents do not hold together."""
    return ValueError(f"{path} is a damaged vaecodec weights file ({why})")


_BITS = {2: torch.int16, 4: torch.int32, 8: torch.int64}  # an element's bytes -> its bits as an integer


def _xor_bits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The bitwise XOR of two tensors of one dtype, as integers of that width."""
    bits = _BITS[a.element_size()]
    return a.contiguous().view(bits) ^ b.contiguous().view(bits)


def _borrowed(path: Path, borrows: dict, own: dict[str, torch.Tensor], seen: frozenset[Path]
              ) -> dict[str, torch.Tensor]:
    """``path``'s tensors ``own`` completed from its lender beside it, once the lender's id is
    checked: the borrowed tensors added, the XOR-stored ones restored."""
    try:
        name, want, names = borrows["model"], borrows["model_id"], list(borrows["tensors"])
        xor = {k: getattr(torch, str(d)) for k, d in borrows.get("xor", {}).items()}
        if not all(isinstance(d, torch.dtype) and d.itemsize in _BITS and k in own for k, d in xor.items()):
            raise TypeError("an XOR-stored tensor that is missing or of an unknown dtype")
    except (KeyError, TypeError, AttributeError) as exc:
        raise _damaged(path, f"borrows: {exc}") from None
    lender = path.with_name(f"{name}.pt")
    if lender.resolve() in seen or len(seen) > MAX_BORROW_DEPTH:
        raise ValueError(f"{path} borrows from {lender} in a cycle (or too deep a chain)")
    if not lender.is_file():
        raise ValueError(f"{path} needs {len(names)} tensors of model {name} ({want}), whose weights "
                         f"file {lender} is missing")
    lent, got_id = _read_lender(lender, seen)
    got = got_id.hex()
    if got != want:
        raise ValueError(f"{path} needs tensors of model {name} {want}, but {lender} is model {got}")
    missing = [k for k in [*names, *xor] if k not in lent]
    if missing:
        raise _damaged(path, f"{lender} lacks {missing[0]}")
    out = {**own, **{k: lent[k] for k in names}}
    for k, dtype in xor.items():  # the lender's values fit the dtype: that is how they were stored
        if own[k].shape != lent[k].shape or own[k].is_floating_point():
            raise _damaged(path, f"XOR-stored {k}")
        stored = own[k].to(_BITS[dtype.itemsize]).view(dtype)  # the XOR's bits, in the tensor's dtype
        out[k] = _xor_bits(stored, lent[k].to(dtype)).view(dtype)
    return out


# Lenders verified in this process, by the SHA-256 of their file's bytes: (canonical tensors, id).
_VERIFIED_LENDERS: dict[bytes, tuple[dict[str, torch.Tensor], bytes]] = {}


def _read_lender(path: Path, seen: frozenset[Path]) -> tuple[dict[str, torch.Tensor], bytes]:
    """A lending file's canonical tensors and its verified model id (``seen``: the borrowers on the
    way here, which it may not borrow from in turn).

    Verified lenders are kept for the life of the process. Finding an old file's model loads the
    shipped files in turn, and every retired one reads its successors, which read theirs: decoding
    one file of each of the four retired models in one process read the default model's 17 MB file 7
    times without the cache, twice with it (once as the default, once as a lender): 1.4 s instead of
    1.8 s on the 2-core machine, 1.0 s now that ``Codec.model_for`` also keeps what it loads. The
    key is the file's content, not its name or time stamp, so a file replaced under the same name is
    read afresh; hashing the bytes is what a hit costs. The tensors are shared with every borrower
    (and some end up as an integer network's buffers as they are), which is safe because nothing
    modifies a loaded model's tensors in place."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read weights {path}: {exc}") from None
    key = hashlib.sha256(data).digest()
    if key not in _VERIFIED_LENDERS:
        config, tensors, blob = read_weights(path, seen, data)
        _VERIFIED_LENDERS[key] = tensors, _verified_id(path, config, tensors, blob)
    return _VERIFIED_LENDERS[key]


def _verified_id(path: Path, config: dict, tensors: dict[str, torch.Tensor], blob: dict) -> bytes:
    """A weights file's model id: computed from a full file's tensors; for a decode-only file, the
    one it stores, once the digest of what it kept matches."""
    if "model_id" not in blob:
        return model_id_of(config, tensors)
    if model_id_of(config, tensors).hex() != blob.get("decoder_digest"):
        raise _damaged(path, "decoder digest mismatch")
    return bytes.fromhex(str(blob["model_id"]))


def export_checkpoint(ckpt_path: Path, out: Path, planes: bool = False) -> None:
    model, ckpt = load_checkpoint(ckpt_path)
    weights = "ema" if ckpt.get("ema") is not None else "model"
    model_id = export_model(model, out, planes)
    print(f"exported step {ckpt['step']} ({'EMA' if weights == 'ema' else 'raw'} weights) to {out} "
          f"(model id {model_id.hex()})")


def _fit_z_density(tables: TableSet, n: int, steps: int = 400) -> dict[str, torch.Tensor]:
    """A float z density whose bin masses match the integer z tables (maximum likelihood on the
    tables' own probabilities, escapes left out): the tables are all a weights file keeps of it."""
    density = FactorizedDensity(n)
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
    return density.state_dict()


def init_from_weights(path: Path) -> dict:
    """A training checkpoint (``config``, ``model``, ``step``) rebuilt from a shipped weights file,
    for ``train --init`` when the run that made the weights is gone: the transforms and gains as
    stored, h_s and the context network dequantized from their integer layers (they re-export to
    the same integers), and the z density refit to the z tables."""
    loaded = load_model(path)
    if loaded.decode_only:
        raise ValueError(f"{path} is decode-only: it has no encoder to fine-tune")
    model = VAEModel(loaded.config)
    for part in ("g_a", "g_s", "h_a", "gains", "post"):
        if getattr(model, part) is not None:
            getattr(model, part).load_state_dict(getattr(loaded, part).state_dict())
    model.h_s.load_integer(loaded.h_s)
    if model.context is not None:
        model.context.load_integer(loaded.context)
    model.z_density.load_state_dict(_fit_z_density(loaded.z_coder.tables, loaded.config.n))
    return {"config": loaded.config.to_dict(), "model": model.state_dict(), "step": 0}


def load_model(path: Path) -> LoadedModel:
    """Load a weights file; raises ValueError if it is not a valid vaecodec weights file."""
    config, tensors, blob = read_weights(path)
    decode_only = "model_id" in blob
    model_id = _verified_id(path, config, tensors, blob)
    try:
        return _build(path, config, tensors, model_id, encoder=not decode_only)
    except (KeyError, TypeError, AttributeError, RuntimeError) as exc:  # missing or misshapen tensors
        raise _damaged(path, f"{type(exc).__name__}: {exc}") from None


def _build(path: Path, config_dict: dict, tensors: dict[str, torch.Tensor], model_id: bytes,
           encoder: bool) -> LoadedModel:
    config = ModelConfig(**config_dict)
    n, m = config.n, config.m

    def build(module: nn.Module, prefix: str) -> nn.Module:
        module.load_state_dict(_sub(tensors, prefix))
        return module.eval().requires_grad_(False)

    def integer(cls: type, prefix: str, layers: list) -> nn.Module:
        sub = _sub(tensors, prefix)
        return cls(layers, *([sub[f"{c}{i}"] for i in range(len(layers))] for c in "wbs"))

    context = integer(IntegerCheckerboardContext, "ctx", _ctx_layers(m)) \
        if config.context == "checkerboard" else None
    return LoadedModel(
        name=path.stem,
        model_id=model_id,
        config=config,
        g_a=build(AnalysisTransform(n, m), "g_a") if encoder else None,
        g_s=build(SynthesisTransform(n, m), "g_s"),
        h_a=build(HyperAnalysis(n, m), "h_a") if encoder else None,
        gains=build(QualityGains(m, config.lambdas), "gains"),
        h_s=integer(IntegerHyperSynthesis, "hs", _hs_layers(n, m)),
        z_coder=TableCoder(_tables_from_tensors("z_tables", tensors)),
        y_coder=TableCoder(_tables_from_tensors("y_tables", tensors)),
        context=context,
        post=build(PostFilter(config.postfilter), "post") if config.postfilter else None,
    )
