"""The Codec: one loaded model on one device, compressing and decompressing images.

Data path (one module per stage)::

    image.load -> transforms.pad -> g_a * gain(level) [-> refine y at effort > 0]
        -> latent_codec: h_a -> z -> integer h_s -> two-pass y symbols -> entropy (ANS)
        [-> g_s of the decoded latents -> wiener.fit against the original] -> container.pack
    container.unpack -> latent_codec: z -> integer h_s -> two-pass y -> y_hat
        -> g_s(. / gain(level)) [-> post-filter] -> crop [-> Wiener filter] -> image.to_pil

Batches: images whose padded sizes agree go through the transforms together (``batch_size`` at a
time), which is what makes a GPU pay off; on a CPU larger activations fall out of cache, so the
default batch there is 1 (``bench/results/speed_cpu.md``). Entropy coding is per image on the CPU.
Per-image failures in a batch are either raised (``on_error="raise"``) or returned in place of the
result (``on_error="return"``), so one bad file never stops the others.

The Wiener filter (:mod:`vaecodec.wiener`) is fitted by default: it runs the decoder's synthesis in
the encoder, which costs encoding time for fewer bits at the same quality
(``bench/results/wiener.md``); ``wiener=False`` (CLI ``--no-filter``) skips it and writes files the
same decoder reads.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import torch
from PIL import Image

from . import container, image, wiener
from .errors import CorruptFileError, ImageError, UnsupportedFileError, VaecodecError
from .files import FileInput, read_bytes
from .latent_codec import Latents, Streams
from .model import Model, load
from .quality import DEFAULT_EFFORT, DEFAULT_QUALITY, check_effort, check_quality, level_of
from .refine import refine
from .transforms import pad, padded_size, tiled

T = TypeVar("T")
OnError = Literal["raise", "return"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA when available, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise VaecodecError(f"unknown device '{device}' (use auto, cpu or cuda)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise VaecodecError("device 'cuda' requested but no CUDA GPU is available")
    if dev.type not in ("cpu", "cuda"):
        raise VaecodecError(f"unsupported device '{device}' (use auto, cpu or cuda)")
    return dev


@dataclass
class Parsed:
    """A .vaez file with everything checked that can be before the networks run."""

    header: container.Header
    payload: container.Payload
    alpha: np.ndarray | None
    filter: wiener.WienerFilter | None

    @property
    def size(self) -> tuple[int, int]:
        return self.header.width, self.header.height

    @property
    def latent_shape(self) -> tuple[int, int]:
        hp, wp = padded_size(*self.size)
        return hp // 16, wp // 16


def _load(src: image.ImageInput) -> image.Picture:
    """An input image, refused (ImageError) if the format cannot hold its size."""
    pic = image.load(src)
    try:
        container.check_size(*pic.size)
    except CorruptFileError as exc:
        raise ImageError(str(exc)) from None
    return pic


def _guard(on_error: OnError, fn: Callable[[], T]) -> T | VaecodecError:
    try:
        return fn()
    except VaecodecError as exc:
        if on_error == "raise":
            raise
        return exc


def _chunks(keys: list, batch_size: int) -> Iterable[list[int]]:
    """Indices grouped by equal key (None: left out), in chunks of at most batch_size."""
    groups: dict = defaultdict(list)
    for i, key in enumerate(keys):
        if key is not None:
            groups[key].append(i)
    for idx in groups.values():
        for start in range(0, len(idx), batch_size):
            yield idx[start : start + batch_size]


class Codec:
    """A loaded vaecodec model.

    >>> codec = Codec()                    # the shipped model, CUDA if available
    >>> data = codec.compress("photo.png", quality=5)
    >>> codec.decompress(data).save("photo.decoded.png")

    ``model``: None for the shipped model, or the path of another weights file (a training run's
    export, say). A file names the model that made it and is decoded only by that model.
    """

    def __init__(self, model: str | os.PathLike | None = None, device: str | torch.device = "auto") -> None:
        self.device = resolve_device(device)
        self.model: Model = load(model, self.device)

    @property
    def default_batch_size(self) -> int:
        """Images per network pass when the caller does not say (see the module docstring)."""
        return 8 if self.device.type == "cuda" else 1

    # ---- compression -------------------------------------------------------------------------

    def compress(self, img: image.ImageInput, quality: float = DEFAULT_QUALITY,
                 effort: int = DEFAULT_EFFORT, wiener: bool = True) -> bytes:
        """Compress one image (path, PIL image or uint8 array) to the bytes of a .vaez file.

        ``quality``: 1 (smallest) to 10 (best), fractions allowed; ``effort`` 0..2 trades encoding
        time for smaller files at the same quality (:mod:`vaecodec.refine`); ``wiener`` fits and
        sends the per-image filter (:mod:`vaecodec.wiener`)."""
        return self.compress_batch([img], quality, effort=effort, on_error="raise", wiener=wiener)[0]

    def compress_batch(
        self,
        images: Sequence[image.ImageInput],
        quality: float = DEFAULT_QUALITY,
        batch_size: int | None = None,
        on_error: OnError = "raise",
        effort: int = DEFAULT_EFFORT,
        wiener: bool = True,
    ) -> list[bytes | VaecodecError]:
        """Compress many images with one model; results are in input order (options as
        :meth:`compress`)."""
        quality = check_quality(quality)
        effort = check_effort(effort)
        pics = [_guard(on_error, lambda src=src: _load(src)) for src in images]
        out: list = [p if isinstance(p, VaecodecError) else None for p in pics]
        keys = [None if out[i] is not None else padded_size(*p.size) for i, p in enumerate(pics)]
        for idx in _chunks(keys, batch_size or self.default_batch_size):
            group = self._compress_group([pics[i] for i in idx], quality, effort, wiener)
            for i, data in zip(idx, group, strict=True):
                out[i] = data
        return out

    def _level(self, quality: float, n: int) -> torch.Tensor:
        return torch.full((n,), level_of(quality), device=self.device)

    def _pixels(self, pics: list[image.Picture]) -> torch.Tensor:
        """Pictures of one padded size as a batch (B, 3, H, W) in [0, 1] on the device."""
        return torch.cat([pad(torch.from_numpy(p.rgb.copy()).permute(2, 0, 1).float().div(255)[None])
                          for p in pics]).to(self.device)

    @torch.no_grad()
    def analysis(self, images: Sequence[image.ImageInput], quality: float) -> torch.Tensor:
        """g_a's float latents y (B, M, H/16, W/16) of same-size images, gain applied, unrounded."""
        pics = [_load(img) for img in images]
        return self.model.analyze(self._pixels(pics), self._level(check_quality(quality), len(pics)))

    @torch.no_grad()  # not inference_mode: the effort search (refine.py) needs autograd
    def latents(self, images: Sequence[image.ImageInput], quality: float, effort: int = DEFAULT_EFFORT
                ) -> Latents:
        """The integer latents that :meth:`compress` codes for same-size images."""
        pics = [_load(img) for img in images]
        return self._latents(pics, check_quality(quality), check_effort(effort))

    def _latents(self, pics: list[image.Picture], quality: float, effort: int) -> Latents:
        m = self.model
        x, level = self._pixels(pics), self._level(quality, len(pics))
        y = m.analyze(x, level)
        z, mean, index = m.latent.hyper(y)
        y = refine(m, x, y, mean, index, level, pics[0].size, effort)
        return m.latent.quantize(y, z, mean, index)

    @torch.no_grad()
    def _compress_group(self, pics: list[image.Picture], quality: float, effort: int,
                        fit_filter: bool) -> list[bytes]:
        m = self.model
        latents = self._latents(pics, quality, effort)
        filters = [b""] * len(pics)
        if fit_filter:
            level = self._level(quality, len(pics))
            decoded = self.synthesis(latents.y_hat, level, [p.size for p in pics])
            lam = float(m.gains.lambda_at(level[:1]))
            for i, pic in enumerate(pics):
                filt = wiener.fit(decoded[i].cpu().numpy(), pic.rgb.transpose(2, 0, 1), lam)
                filters[i] = wiener.encode(filt) if filt is not None else b""
        results = []
        for pic, streams, filt in zip(pics, m.latent.encode(latents), filters, strict=True):
            alpha = image.encode_alpha(pic.alpha) if pic.alpha is not None else b""
            header = container.Header(m.model_id, pic.mode, quality, *pic.size)
            results.append(container.pack(header, container.Payload(streams.stream, streams.escapes,
                                                                    alpha, filt)))
        return results

    # ---- decompression -----------------------------------------------------------------------

    def decompress(self, data: FileInput) -> Image.Image:
        """Decode .vaez bytes (or a path to a .vaez file) to a PIL image in its original mode."""
        return self.decompress_batch([data], on_error="raise")[0]

    def decompress_batch(
        self,
        files: Sequence[FileInput],
        batch_size: int | None = None,
        on_error: OnError = "raise",
    ) -> list[Image.Image | VaecodecError]:
        """Decode many .vaez files; results are in input order."""
        parsed = [_guard(on_error, lambda f=f: self.parse(f)) for f in files]
        latents = [p if isinstance(p, VaecodecError) else _guard(on_error, lambda p=p: self._decode(p))
                   for p in parsed]
        out: list = [lat if isinstance(lat, VaecodecError) else None for lat in latents]
        keys = [None if out[i] is not None else p.latent_shape for i, p in enumerate(parsed)]
        for idx in _chunks(keys, batch_size or self.default_batch_size):
            group = [parsed[i] for i in idx]
            level = torch.tensor([level_of(p.header.quality) for p in group], device=self.device)
            y_hat = torch.cat([latents[i].y_hat for i in idx])
            decoded = self.synthesis(y_hat, level, [p.size for p in group])
            for i, p, x in zip(idx, group, decoded, strict=True):
                if p.filter is not None:
                    x = p.filter.apply(x[None])[0].clamp(0, 255)
                rgb = torch.round(x).to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()
                out[i] = image.to_pil(image.Picture(rgb, p.header.mode, p.alpha))
        return out

    def parse(self, src: FileInput) -> Parsed:
        """Read and check a .vaez file: container, model, alpha plane, filter section."""
        header, payload = container.unpack(read_bytes(src))
        if header.model_id != self.model.model_id:
            from . import __version__

            raise UnsupportedFileError(
                f"file was made with model {header.model_id.hex()}, which this vaecodec {__version__} "
                f"does not have (it has {self.model.name}, {self.model.model_id.hex()})")
        alpha = image.decode_alpha(payload.alpha, header.width, header.height) if payload.alpha else None
        return Parsed(header, payload, alpha, wiener.decode(payload.filter))

    def _decode(self, parsed: Parsed) -> Latents:
        streams = Streams(parsed.payload.stream, parsed.payload.escapes)
        return self.model.latent.decompress(streams, parsed.latent_shape, self.device)

    def decode_integers(self, data: FileInput) -> dict[str, np.ndarray]:
        """Every integer the decoder derives from a file: z and y symbols, the prior's fixed-point
        means and scale indices. These must be identical on every device and thread count, which is
        what the golden-file tests and the cross-device bench check."""
        return self._decode(self.parse(data)).numpy()

    @torch.inference_mode()
    def synthesis(self, y_hat: torch.Tensor, level: torch.Tensor, sizes: list[tuple[int, int]]
                  ) -> list[torch.Tensor]:
        """The synthesis of each image's latents at its level, cropped to its (width, height): (3, H,
        W) grey levels in 0..255, float, before the Wiener filter and rounding."""
        m = self.model
        x = tiled(lambda v: m.synthesize(v, level), y_hat, 1, 16).clamp(0, 1) * 255
        return [x[i, :, :h, :w] for i, (w, h) in enumerate(sizes)]

    # ---- inspection --------------------------------------------------------------------------

    @staticmethod
    def info(data: FileInput) -> tuple[container.Header, int]:
        """Header of a .vaez file (verified, checksum included) and its total size in bytes."""
        raw = read_bytes(data)
        return container.unpack(raw)[0], len(raw)
