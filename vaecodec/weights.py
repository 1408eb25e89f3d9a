"""The weights file: one safetensors file holding a model's tensors, integer tables and config.

Layout (``weights/<name>.safetensors``, installed as ``vaecodec.weights_data``):

* tensors: the float g_a, g_s, h_a, quality-gain and post-filter weights; the exported integer h_s
  (``hs.w{i}``, ``hs.b{i}``, ``hs.s{i}``: weights, biases, shifts) and, for models with the
  checkerboard context, the integer context network (``ctx.*``, the same layout); the integer PMF
  tables of z (one per channel) and y (one per scale index), ``z_tables.*`` and ``y_tables.*``;
* metadata: ``format`` (``vaecodec-weights``), ``config`` (JSON: n, m, lambdas, context,
  postfilter) and ``model_id`` (hex); and *extras*, keys the model id does not cover because they
  decide no bit of any file: ``surprise`` (JSON), the statistics of natural photos that
  :mod:`vaecodec.latent_tools` calibrates its surprise scores with. Adding or recomputing an extra
  leaves the model, its id and every file it wrote as they were.

The model id, which every .vaez file names, is a content hash: the first 8 bytes of a SHA-256 over
the config (JSON, sorted keys) and every tensor (name, dtype, shape and bytes, in name order) in its
*canonical* dtype (float32 for floats, int32 for the integer networks' weights, int64 for the other
integers). Tensors are stored in the smallest dtype that holds their values exactly (float16 for
float weights trained in reduced precision, int16 for most integers), which does not change the id.
On load the id is recomputed and compared with the stored one, so a damaged file (a flipped byte
anywhere) is refused in one line instead of loading silently and writing files no decoder accepts.

safetensors rather than a pickle: nothing executable in a file, a format every framework reads, and
it loads without torch, so ``vaecodec models`` need not import it. Building the networks from a
:class:`Weights` is :mod:`vaecodec.model`'s job.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import VaecodecError
from .files import write_atomic

DEFAULT_MODEL = "hp128cbpf-v5"
FORMAT = "vaecodec-weights"
SUFFIX = ".safetensors"
INT_WEIGHTS = ("hs.w", "ctx.w")  # integer-network weights: canonical int32
STORED_DTYPES = frozenset(map(np.dtype, (np.float16, np.float32, np.int16, np.int32, np.int64)))
_TORCH_NAMES = {np.dtype(np.float32): "torch.float32", np.dtype(np.int32): "torch.int32",
                np.dtype(np.int64): "torch.int64"}  # what the id has always hashed as the dtype


def weights_dir() -> Path:
    """Where the shipped weights live: the installed ``vaecodec.weights_data`` package, or, when
    running from a source checkout, the repository's ``weights/`` folder."""
    try:
        import vaecodec.weights_data as pkg  # installed wheel: weights/ maps to this package

        return Path(pkg.__path__[0])
    except ImportError:
        return Path(__file__).resolve().parent.parent / "weights"


def shipped() -> dict[str, Path]:
    """The shipped weights files by model name."""
    return {p.name.removesuffix(SUFFIX): p for p in sorted(weights_dir().glob(f"*{SUFFIX}"))}


def resolve(model: str | os.PathLike | None) -> Path:
    """A shipped model's name (None: the default) or a weights file's path -> the file."""
    models = shipped()
    name = DEFAULT_MODEL if model is None else str(model)
    if name in models:
        return models[name]
    if Path(name).is_file():
        return Path(name)
    raise VaecodecError(f"unknown model '{name}' (shipped: {', '.join(models) or 'none'})")


def canonical(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The tensors in the dtypes the model id is defined over (see the module docstring)."""
    def dtype(name: str, a: np.ndarray) -> type:
        if a.dtype.kind == "f":
            return np.float32
        return np.int32 if name.startswith(INT_WEIGHTS) else np.int64
    return {k: np.ascontiguousarray(v, dtype=dtype(k, v)) for k, v in tensors.items()}


def compact(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The tensors in the smallest dtypes that hold their values exactly, for storage."""
    out = {}
    for k, v in tensors.items():
        if v.dtype.kind == "f":
            half = v.astype(np.float16)
            v = half if np.array_equal(half.astype(v.dtype), v) else v
        else:
            for small in (np.int16, np.int32):
                info = np.iinfo(small)
                if v.size == 0 or (info.min <= v.min() and v.max() <= info.max):
                    v = v.astype(small)
                    break
        out[k] = v
    return out


def model_id_of(config: dict, tensors: dict[str, np.ndarray]) -> bytes:
    """The id of a model: its config and canonical tensors, hashed (module docstring)."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name, a in sorted(canonical(tensors).items()):
        h.update(f"{name}:{_TORCH_NAMES[a.dtype]}:{tuple(a.shape)}".encode())
        h.update(a.tobytes())
    return h.digest()[:8]


@dataclass
class Weights:
    """A verified weights file: name, id, config and canonical tensors (numpy)."""

    name: str
    model_id: bytes
    config: dict
    tensors: dict[str, np.ndarray]
    extras: dict[str, str] = field(default_factory=dict)  # metadata outside the id (module docstring)


RESERVED = ("format", "config", "model_id")  # the metadata keys that are not extras


def write(path: Path, config: dict, tensors: dict[str, np.ndarray], extras: dict[str, str] | None = None
          ) -> bytes:
    """Write a weights file atomically, replacing any file there; returns its model id. ``extras``:
    metadata strings outside the model id (module docstring)."""
    from safetensors.numpy import save

    extras = dict(extras or {})
    if any(k in RESERVED for k in extras):
        raise ValueError(f"an extra may not be named {', '.join(RESERVED)}")
    tensors = canonical(tensors)
    model_id = model_id_of(config, tensors)
    metadata = {"format": FORMAT, "config": json.dumps(config, sort_keys=True), "model_id": model_id.hex(),
                **extras}
    data = save(compact(tensors), metadata=metadata)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: f.write(data), force=True)
    return model_id


def read(path: Path) -> Weights:
    """Read and verify a weights file; VaecodecError in one line if it is not an intact one."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VaecodecError(f"cannot read weights {path}: {exc.strerror}") from None
    try:
        metadata = _metadata(data)
        tensors = load(data)
        if metadata.get("format") != FORMAT:
            raise ValueError("not a vaecodec weights file")
        if any(a.dtype not in STORED_DTYPES for a in tensors.values()):
            raise ValueError("a tensor of a dtype vaecodec does not store")
        config = json.loads(metadata["config"])
        stored = str(metadata["model_id"])
        model_id = model_id_of(config, tensors)
    except (SafetensorError, ValueError, KeyError, TypeError) as exc:
        raise VaecodecError(f"{path} is not an intact vaecodec weights file ({exc})") from None
    if model_id.hex() != stored:  # compared as written: an id in upper case is a changed byte too
        raise VaecodecError(f"{path} is a damaged vaecodec weights file (its content hashes to model "
                            f"{model_id.hex()}, not {stored})")
    extras = {k: v for k, v in metadata.items() if k not in RESERVED}
    return Weights(path.name.removesuffix(SUFFIX), model_id, config, canonical(tensors), extras)


def read_metadata(path: Path) -> dict[str, str]:
    """A weights file's metadata from its header alone, unverified: enough to find an extra of a file
    whose model is loaded (compare its ``model_id``) without hashing its tensors again."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            return _metadata(size.to_bytes(8, "little") + f.read(min(size, 1 << 24)))
    except (OSError, ValueError) as exc:
        raise VaecodecError(f"{path} is not a readable vaecodec weights file ({exc})") from None


def _metadata(data: bytes) -> dict:
    """The metadata of a safetensors file's header (the library's numpy loader does not return it)."""
    if len(data) < 8:
        raise ValueError("file is truncated")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise ValueError("header is truncated")
    raw = data[8 : 8 + size]
    if any(c in raw for c in b"\t\n\r"):  # JSON whitespace the writer never writes (it pads with spaces)
        raise ValueError("header is not as written")
    header = json.loads(raw)
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict):
        raise ValueError("no vaecodec metadata")
    return metadata
