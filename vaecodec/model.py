"""The model the codec runs: the networks and tables of a weights file, built on one device.

:func:`load` turns a verified :class:`vaecodec.weights.Weights` into a :class:`Model`: the float
transforms (g_a, g_s, h_a, the quality gains, the post-filter) and the :class:`LatentCodec` with the
integer h_s, the integer context network and the entropy tables. Training has float twins of the
integer parts (``training/``); the runtime never needs them.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from . import weights
from .entropy import TableCoder, TableSet
from .errors import VaecodecError
from .latent_codec import LatentCodec
from .prior import IntegerCheckerboardContext, IntegerHyperSynthesis, ctx_layers, hs_layers
from .quality import LEVELS
from .transforms import AnalysisTransform, HyperAnalysis, PostFilter, QualityGains, SynthesisTransform, tiled

CONTEXTS = ("none", "checkerboard")


@dataclass
class ModelConfig:
    """A model's architecture and the lambdas of its quality levels, as stored in its weights file."""

    n: int  # channels of the hidden layers of g_a/g_s and of z
    m: int  # channels of y
    lambdas: list[float] = field(default_factory=list)  # one per trained quality level
    context: str = "none"  # "checkerboard": the context model on top of the hyperprior
    postfilter: int = 0  # channels of the post-filter on g_s's output; 0: none

    def __post_init__(self) -> None:
        if self.context not in CONTEXTS:
            raise ValueError(f"unknown context model {self.context!r} (known: {', '.join(CONTEXTS)})")
        if len(self.lambdas) != LEVELS:
            raise ValueError(f"a model needs {LEVELS} quality levels (lambdas), not {len(self.lambdas)}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Model:
    """Everything the codec needs from a weights file, on one device."""

    name: str
    model_id: bytes
    config: ModelConfig
    g_a: AnalysisTransform
    g_s: SynthesisTransform
    gains: QualityGains
    latent: LatentCodec
    post: PostFilter | None = None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """g_a of padded images x (B, 3, H, W) in [0, 1], tile by tile on large images
        (:func:`vaecodec.transforms.tiled`): the part of the analysis that does not depend on the
        quality."""
        return tiled(self.g_a, x, 16, 1)

    def analyze(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """Latents y (B, M, H/16, W/16) of padded images x at quality levels (B,): g_a, then the gain."""
        return self.features(x) * self.gains.gain(level)

    def synthesize(self, y_hat: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """The decoded image (B, 3, 16h, 16w), not yet clamped, of latents y_hat (B, M, h, w) at
        quality levels (B,): g_s after the inverse gain, then the post-filter if any. Float32 with
        autograd; without it, in :attr:`synthesis_dtype` (:class:`SynthesisTransform`)."""
        x = self.g_s(y_hat * self.gains.inverse_gain(level))
        return x if self.post is None else self.post(x, level)

    @property
    def synthesis_dtype(self) -> torch.dtype:
        """What :meth:`synthesize` computes in without autograd (with it: always float32)."""
        return self.g_s.compute_dtype

    def set_synthesis_dtype(self, dtype: torch.dtype) -> None:
        self.g_s.compute_dtype = dtype
        if self.post is not None:
            self.post.compute_dtype = dtype


PRECISIONS = ("auto", "float32", "bfloat16")
PRECISION_ENV = "VAECODEC_PRECISION"


def _native_bfloat16() -> bool:
    """Whether this CPU does bfloat16 arithmetic in hardware (AVX512-BF16 or AMX), where oneDNN's
    bfloat16 convolutions are several times faster than float32 ones; elsewhere they are emulated
    and slower. Private torch probes, so a torch without them counts as no."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    except RuntimeError:
        return False


def synthesis_dtype(device: torch.device, precision: str | None = None) -> torch.dtype:
    """The dtype the decoder's synthesis (g_s and the post-filter, without autograd) computes in.
    ``precision``: "float32" (None: the ``VAECODEC_PRECISION`` environment variable, else this),
    "bfloat16", or "auto": bfloat16 on a CPU that has it natively, float32 elsewhere (CUDA
    included). float32 is the default because it is what keeps decoded pixels within a grey level,
    on a fraction of a percent of them, across machines (docs/format.md); bfloat16 is the fast
    choice where the CPU has it, for those who accept more such differences. The encoder fits the
    Wiener filter to this same synthesis. What bfloat16 costs in PSNR and in pixels that differ
    from float32 is in ``bench/results/decode_speed.md``."""
    choice = precision or os.environ.get(PRECISION_ENV) or "float32"
    if choice not in PRECISIONS:
        raise VaecodecError(f"precision must be one of {', '.join(PRECISIONS)}, got {choice!r}")
    if choice == "auto":
        choice = "bfloat16" if device.type == "cpu" and _native_bfloat16() else "float32"
    return getattr(torch, choice)


def load(model: str | os.PathLike | None = None, device: torch.device | str = "cpu",
         precision: str | None = None) -> Model:
    """The shipped model (by name; None: the default) or the model of a weights file, on a device,
    its decoder's synthesis in ``precision`` (:func:`synthesis_dtype`). VaecodecError in one line
    for a file that is damaged or does not fit its config."""
    device = torch.device(device)
    dtype = synthesis_dtype(device, precision)
    w = weights.read(weights.resolve(model))
    try:
        built = _build(w, device)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # missing or misshapen tensors
        raise VaecodecError(f"{w.name} is a damaged vaecodec weights file ({type(exc).__name__}: "
                            f"{exc})") from None
    built.set_synthesis_dtype(dtype)
    return built


def _build(w: weights.Weights, device: torch.device) -> Model:
    config = ModelConfig(**w.config)
    tensors = {k: torch.from_numpy(v) for k, v in w.tensors.items()}
    used: set[str] = set()

    def sub(prefix: str) -> dict[str, torch.Tensor]:
        keys = [k for k in tensors if k.startswith(prefix + ".")]
        used.update(keys)
        return {k[len(prefix) + 1 :]: tensors[k] for k in keys}

    def build(module: nn.Module, prefix: str, channels_last: bool = False) -> nn.Module:
        module.load_state_dict(sub(prefix))
        module = module.eval().requires_grad_(False).to(device)
        # channels_last weights make oneDNN pick faster convolutions for the float transforms
        return module.to(memory_format=torch.channels_last) if channels_last else module

    def integer(cls: type, prefix: str, layers: list) -> nn.Module:
        params = sub(prefix)
        return cls(layers, *([params[f"{c}{i}"] for i in range(len(layers))] for c in "wbs")).to(device)

    def tables(prefix: str) -> TableCoder:
        parts = sub(prefix)
        keys = ("offsets", "lengths", "pmfs")
        return TableCoder(TableSet(*(parts[k].numpy().astype(np.int64) for k in keys)))

    n, m = config.n, config.m
    context = integer(IntegerCheckerboardContext, "ctx", ctx_layers(m)) \
        if config.context == "checkerboard" else None
    h_s = integer(IntegerHyperSynthesis, "hs", hs_layers(n, m))
    h_a = build(HyperAnalysis(n, m), "h_a")
    latent = LatentCodec(h_a, h_s, context, tables("z_tables"), tables("y_tables"))
    model = Model(
        name=w.name, model_id=w.model_id, config=config,
        g_a=build(AnalysisTransform(n, m), "g_a", channels_last=True),
        g_s=build(SynthesisTransform(n, m), "g_s", channels_last=True),
        gains=build(QualityGains(m, config.lambdas), "gains"),
        latent=latent,
        post=build(PostFilter(config.postfilter), "post", channels_last=True) if config.postfilter else None,
    )
    unused = set(tensors) - used
    if unused:
        raise ValueError(f"tensors the config has no place for: {', '.join(sorted(unused)[:3])}")
    return model
