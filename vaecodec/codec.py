"""The Codec: one loaded model on one device, compressing and decompressing images.

Data path (one module per stage)::

    image.load -> pad -> g_a * gain -> h_a -> round z -> integer h_s(z) [-> refine y at effort > 0]
        -> round(y - mean) -> entropy.encode
        [-> decode y_hat as below -> wiener.fit against the original] -> container.pack (compress)
    container.unpack -> entropy: pop z -> integer h_s(z) -> pop y -> y + mean
        -> g_s(. * inverse gain) [-> post-filter] -> crop [-> Wiener filter] -> image.to_pil
                                                                                     (decompress)

With the checkerboard context model, y is two parts: the anchors, coded with h_s's (mean, scale
index), and the rest, coded with the integer context network's refinement of them computed from the
decoded anchors; the decoder pops the anchors, runs the context network, then pops the rest.

Batches: images whose padded sizes agree go through the transforms together (``batch_size`` at a
time), which is what makes a GPU pay off. On the CPU it does not: larger activations fall out of
cache, and ``bench.speed`` measured 0.28 s per Kodak image encoded one at a time against 0.37 s in
batches of 8 (1 thread), so the default batch is 1 there and 8 on CUDA. Entropy coding is per
image on the CPU. Per-image failures in a batch are either raised (``on_error="raise"``) or
returned in place of the result (``on_error="return"``), so one bad file never stops the others.

Quality is a continuous knob from 1 (smallest files) to 10 (best quality). Qualities 3..10 are the
model's 8 trained rate points (levels 0..7) and fractions interpolate between them; qualities 1 and 2
extrapolate below the lowest trained point (see :class:`vaecodec.transforms.QualityGains`), which is
how the knob reaches the lowest rates without a second model.

The Wiener filter (:mod:`vaecodec.wiener`) is fitted by default: it runs the decoder's synthesis
in the encoder, which makes an effort-0 encode 2-3 times slower on a CPU for 2.4 % fewer bits at
the same PSNR (BD-rate, Kodak); ``wiener=False`` (CLI ``--no-filter``) skips it and writes files
the same decoder reads.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from . import container, entropy, image, wiener
from .container import QUALITY_MAX, QUALITY_MIN
from .errors import CorruptFileError, UnsupportedFileError, VaecodecError
from .prior import checkerboard_anchors, mean_value
from .quantize import symbols
from .refine import EFFORT_MAX, refine, steps_for
from .transforms import tiled
from .weights import DEFAULT_MODEL, LoadedModel, available_models, load_model

DEFAULT_QUALITY = 7.0
DEFAULT_EFFORT = 0
QUALITY_OF_LEVEL_0 = 3.0  # the quality that names the model's lowest trained level
PAD = 64  # g_a downsamples by 16 and h_a by 4 more
FileInput = bytes | str | os.PathLike
T = TypeVar("T")


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


def check_quality(quality: float) -> float:
    q = float(quality)
    if not QUALITY_MIN <= q <= QUALITY_MAX:
        raise VaecodecError(f"quality must be between {QUALITY_MIN:g} and {QUALITY_MAX:g}, got {q:g}")
    return round(q, 2)  # the container stores hundredths


def check_effort(effort: int) -> int:
    if isinstance(effort, bool) or not isinstance(effort, int | np.integer) or not 0 <= effort <= EFFORT_MAX:
        raise VaecodecError(f"effort must be an integer from 0 to {EFFORT_MAX}, got {effort!r}")
    return int(effort)


def quality_to_level(quality: float) -> float:
    """The model's (fractional) gain level for a quality; negative levels are extrapolated."""
    return quality - QUALITY_OF_LEVEL_0


def _read(src: FileInput) -> bytes:
    if isinstance(src, bytes | bytearray | memoryview):
        return bytes(src)
    try:
        return Path(src).read_bytes()
    except FileNotFoundError:
        raise VaecodecError(f"{src}: no such file") from None
    except IsADirectoryError:
        raise VaecodecError(f"{src}: is a directory") from None
    except OSError as exc:
        raise VaecodecError(f"{src}: cannot read ({exc.strerror})") from None


def _guard(on_error: str, fn: Callable[[], T]) -> T | VaecodecError:
    try:
        return fn()
    except VaecodecError as exc:
        if on_error == "raise":
            raise
        return exc


def _chunks(keys: list, batch_size: int) -> Iterable[list[int]]:
    """Indices grouped by equal key, in chunks of at most batch_size."""
    groups: dict = defaultdict(list)
    for i, key in enumerate(keys):
        if key is not None:
            groups[key].append(i)
    for idx in groups.values():
        for start in range(0, len(idx), batch_size):
            yield idx[start : start + batch_size]


class Codec:
    """A loaded vaecodec model.

    >>> codec = Codec()                    # shipped default model, CUDA if available
    >>> data = codec.compress("photo.png", quality=5)
    >>> codec.decompress(data).save("photo.decoded.png")
    """

    def __init__(self, model: str | os.PathLike | None = None, device: str | torch.device = "auto"):
        self.device = resolve_device(device)
        path = self._model_path(model)
        try:
            self.model = load_model(path).to(self.device)
        except ValueError as exc:
            raise VaecodecError(str(exc)) from None
        self._by_id: dict[bytes, LoadedModel] = {self.model.model_id: self.model}

    def require_encoder(self) -> None:
        """Raise VaecodecError if this codec's model is decode-only (weights.retire_encoder): such a
        model ships to decode the files made with it, not to make new ones."""
        if self.model.decode_only:
            raise VaecodecError(f"model {self.model.name} is decode-only (kept to decode the files made "
                                f"with it); compress with {DEFAULT_MODEL}")

    @property
    def default_batch_size(self) -> int:
        """Images per network pass when the caller does not say (see the module docstring)."""
        return 8 if self.device.type == "cuda" else 1

    @staticmethod
    def _model_path(model: str | os.PathLike | None) -> Path:
        shipped = available_models()
        name = DEFAULT_MODEL if model is None else str(model)
        if name in shipped:
            return shipped[name]
        if Path(name).is_file():
            return Path(name)
        raise VaecodecError(f"unknown model '{name}' (shipped: {', '.join(shipped) or 'none'})")

    # ---- compression -------------------------------------------------------------------------

    def compress(self, img: image.ImageInput, quality: float = DEFAULT_QUALITY,
                 effort: int = DEFAULT_EFFORT, wiener: bool = True) -> bytes:
        """Compress one image (path, PIL image or uint8 array) to the bytes of a .vaez file."""
        return self.compress_batch([img], quality, effort=effort, on_error="raise", wiener=wiener)[0]

    def compress_batch(
        self,
        images: Sequence[image.ImageInput],
        quality: float = DEFAULT_QUALITY,
        batch_size: int | None = None,
        on_error: Literal["raise", "return"] = "raise",
        effort: int = DEFAULT_EFFORT,
        wiener: bool = True,
    ) -> list[bytes | VaecodecError]:
        """Compress many images with one model; results are in input order. ``effort`` (0..2)
        trades encoding time for smaller files at the same quality (see :mod:`vaecodec.refine`);
        ``wiener`` fits and sends the per-image filter (see the module docstring)."""
        self.require_encoder()
        quality = check_quality(quality)
        effort = check_effort(effort)
        pics = [_guard(on_error, lambda src=src: image.load(src)) for src in images]
        for i, pic in enumerate(pics):
            if isinstance(pic, image.Picture):
                pics[i] = _guard(on_error, lambda pic=pic: self._check_size(pic))
        out: list = [p if isinstance(p, VaecodecError) else None for p in pics]
        keys = [None if out[i] is not None else self._padded(p.size) for i, p in enumerate(pics)]
        for idx in _chunks(keys, batch_size or self.default_batch_size):
            group = self._compress_group([pics[i] for i in idx], quality, effort, wiener)
            for i, data in zip(idx, group, strict=True):
                out[i] = data
        return out

    @staticmethod
    def _check_size(pic: image.Picture) -> image.Picture:
        try:
            container.check_size(*pic.size)
        except CorruptFileError as exc:
            raise image.ImageError(str(exc)) from None
        return pic

    @staticmethod
    def _padded(size: tuple[int, int]) -> tuple[int, int]:
        w, h = size
        return (h + (-h) % PAD, w + (-w) % PAD)

    def _level(self, quality: float, n: int) -> torch.Tensor:
        return torch.full((n,), quality_to_level(quality), device=self.device)

    @torch.no_grad()  # not inference_mode: the effort search (refine.py) needs autograd
    def symbols(self, pics: list[image.Picture], quality: float, effort: int = DEFAULT_EFFORT
                ) -> tuple[np.ndarray, ...]:
        """The integer latents of same-size pictures: z symbols (B, N, h, w), y symbols
        ``round(y - mean)`` (B, M, 4h, 4w) and their scale indices (B, M, 4h, 4w), with (mean,
        scale index) from h_s, refined by the context model at the non-anchors if there is one.
        Above effort 0, y is first optimized for these pictures (:mod:`vaecodec.refine`)."""
        return self._latents(pics, quality, effort)[:3]

    @torch.no_grad()
    def _latents(self, pics: list[image.Picture], quality: float, effort: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, torch.Tensor]:
        """:meth:`symbols` and y_hat (B, M, H/16, W/16) on the device, as the decoder will see it."""
        m = self.model
        hp, wp = self._padded(pics[0].size)
        x = torch.stack([self._to_tensor(p, hp, wp) for p in pics]).to(self.device)
        level = self._level(quality, len(pics))
        y = tiled(m.g_a, x, 16, 1) * m.gains.gain(level)
        z = symbols(m.h_a(y))
        mean, index = m.h_s(z)
        y = refine(m, x, y, mean, index, level, pics[0].size, steps_for(effort))
        mean, index = m.y_params(y, mean, index)  # the anchors' symbols are final; the rest refined
        y_sym = symbols(y, mean_value(mean))
        y_hat = (y_sym.double() + mean_value(mean)).float()  # what _decode_latents computes
        return z.cpu().numpy(), y_sym.cpu().numpy(), index.cpu().numpy(), y_hat

    @staticmethod
    def _parts(m: LoadedModel, shape: tuple[int, ...]) -> list[np.ndarray]:
        """Boolean masks (M, H, W) of the parts of y, in coding order (see the module docstring)."""
        if m.context is None:
            return [np.ones(shape, dtype=bool)]
        anchors = np.broadcast_to(checkerboard_anchors(*shape[1:])[0].numpy(), shape)
        return [anchors, ~anchors]

    def _compress_group(self, pics: list[image.Picture], quality: float, effort: int,
                        fit_filter: bool) -> list[bytes]:
        m = self.model
        z, y_sym, index, y_hat = self._latents(pics, quality, effort)
        filters = [b""] * len(pics)
        if fit_filter:
            level = self._level(quality, len(pics))
            decoded = self._decoded(m, level, y_hat, [p.size for p in pics])
            lam = float(m.gains.lambda_at(level[:1]))
            for i, pic in enumerate(pics):
                filt = wiener.fit(decoded[i].cpu().numpy(), pic.rgb.transpose(2, 0, 1), lam)
                filters[i] = wiener.encode(filt) if filt is not None else b""
        results = []
        for i, pic in enumerate(pics):
            parts = [(y_sym[i][mask], index[i][mask]) for mask in self._parts(m, y_sym.shape[1:])]
            stream, escapes = entropy.encode(m.z_coder, z[i], m.y_coder, parts)
            alpha = image.encode_alpha(pic.alpha) if pic.alpha is not None else b""
            header = container.Header(m.model_id, pic.mode, quality, *pic.size)
            results.append(container.pack(header, container.Payload(stream, escapes, alpha, filters[i])))
        return results

    @staticmethod
    def _to_tensor(pic: image.Picture, hp: int, wp: int) -> torch.Tensor:
        x = torch.from_numpy(pic.rgb.copy()).permute(2, 0, 1).float().div(255)
        h, w = x.shape[1:]
        return F.pad(x[None], (0, wp - w, 0, hp - h), mode="replicate")[0]

    # ---- decompression -----------------------------------------------------------------------

    def decompress(self, data: FileInput) -> Image.Image:
        """Decode .vaez bytes (or a path to a .vaez file) to a PIL image in its original mode."""
        return self.decompress_batch([data], on_error="raise")[0]

    def decompress_batch(
        self,
        files: Sequence[FileInput],
        batch_size: int | None = None,
        on_error: Literal["raise", "return"] = "raise",
    ) -> list[Image.Image | VaecodecError]:
        """Decode many .vaez files; results are in input order."""
        parsed = [_guard(on_error, lambda f=f: self._parse(f)) for f in files]
        out: list = [p if isinstance(p, VaecodecError) else None for p in parsed]
        latents = [None if out[i] else _guard(on_error, lambda p=p: self._decode_latents(*p[:3]))
                   for i, p in enumerate(parsed)]
        keys = []
        for i, lat in enumerate(latents):
            if isinstance(lat, VaecodecError):
                out[i] = lat
            keys.append(None if out[i] is not None else (parsed[i][1].model_id, lat.shape))
        for idx in _chunks(keys, batch_size or self.default_batch_size):
            pixels = self._synthesize(parsed[idx[0]][0], [parsed[i][1] for i in idx],
                                      torch.stack([latents[i] for i in idx]), [parsed[i][4] for i in idx])
            for i, rgb in zip(idx, pixels, strict=True):
                header, alpha = parsed[i][1], parsed[i][3]
                out[i] = image.to_pil(image.Picture(rgb, header.mode, alpha))
        return out

    def _parse(self, src: FileInput) -> tuple:
        """Everything that can be checked before the networks run: container, model, alpha plane.
        Returns (model, header, payload, alpha or None, Wiener filter or None)."""
        header, payload = container.unpack(_read(src))
        model = self.model_for(header.model_id)
        alpha = image.decode_alpha(payload.alpha, header.width, header.height) if payload.alpha else None
        return model, header, payload, alpha, wiener.decode(payload.filter)

    def model_for(self, model_id: bytes) -> LoadedModel:
        """The shipped model a file was made with, or UnsupportedFileError saying which it needs."""
        if model_id in self._by_id:
            return self._by_id[model_id]
        # A model's id is a hash of its tensors, so finding one means loading the shipped models in
        # turn (0.1-0.7 s each); the error below names every one of them. Every model loaded on the
        # way is kept, match or not, so that each loads at most once per Codec: decoding a folder of
        # old files made with several retired models would otherwise repeat the search per file.
        shipped = {m.name: m.model_id for m in self._by_id.values()}
        broken = []  # a shipped file that does not load (say, a lender it borrows from is gone)
        for name, path in available_models().items():
            if name in shipped:
                continue
            try:
                candidate = load_model(path).to(self.device)
            except ValueError as exc:
                broken.append(f"; {name} does not load: {exc}")
                continue
            shipped[name] = candidate.model_id
            self._by_id[candidate.model_id] = candidate
            if candidate.model_id == model_id:
                return candidate
        from . import __version__

        listed = ", ".join(f"{name} ({mid.hex()})" for name, mid in sorted(shipped.items()))
        raise UnsupportedFileError(
            f"file was made with model {model_id.hex()}, which vaecodec {__version__} does not ship "
            f"(it has {listed}{''.join(broken)})")

    @torch.inference_mode()
    def decode_integers(self, data: FileInput) -> dict[str, np.ndarray]:
        """Every integer the decoder derives from a file: z and y symbols, the prior's fixed-point
        means and scale indices. These must be identical on every device and thread count, which is
        what the golden-file tests and the cross-device bench check."""
        header, payload = container.unpack(_read(data))
        m = self.model_for(header.model_id)
        z, y, mean, index = self._decode_integers(m, header, payload)
        return {"z": z, "y": y, "mean": mean.cpu().numpy().astype(np.int64), "index": index}

    def _decode_integers(self, m: LoadedModel, header: container.Header, payload: container.Payload
                         ) -> tuple[np.ndarray, np.ndarray, torch.Tensor, np.ndarray]:
        hp, wp = self._padded((header.width, header.height))
        dec = entropy.StreamDecoder(payload.stream, payload.escapes)
        z = dec.z(m.z_coder, (m.config.n, hp // PAD, wp // PAD))
        mean, index = m.h_s(torch.from_numpy(z)[None].to(self.device))
        table = index[0].cpu().numpy()
        y = np.zeros(table.shape, dtype=np.int64)
        masks = self._parts(m, y.shape)
        y[masks[0]] = dec.y(m.y_coder, table[masks[0]])
        if m.context is not None:  # the rest's tables come from the decoded anchors
            mean, index = m.context(torch.from_numpy(y)[None].to(self.device), mean, index)
            table = index[0].cpu().numpy()
            y[masks[1]] = dec.y(m.y_coder, table[masks[1]])
        dec.finish()
        return z, y, mean[0], table

    @torch.inference_mode()
    def _decode_latents(self, m: LoadedModel, header: container.Header,
                        payload: container.Payload) -> torch.Tensor:
        """Entropy-decode a file's y_hat (M, H/16, W/16) as float32 on the device."""
        _, y, mean, _ = self._decode_integers(m, header, payload)
        y_hat = torch.from_numpy(y).to(self.device).double() + mean_value(mean)
        return y_hat.float()

    @torch.inference_mode()
    def _decoded(self, m: LoadedModel, level: torch.Tensor, y_hat: torch.Tensor,
                 sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        """The synthesis of each image, cropped to its (width, height): (3, H, W) grey levels in
        0..255, float, before the Wiener filter and rounding. The encoder fits the filter on these."""
        x = tiled(lambda v: m.synthesize(v, level), y_hat, 1, 16).clamp(0, 1) * 255
        return [x[i, :, :h, :w] for i, (w, h) in enumerate(sizes)]

    @torch.inference_mode()
    def _synthesize(self, m: LoadedModel, headers: list[container.Header], y_hat: torch.Tensor,
                    filters: list[wiener.WienerFilter | None]) -> list[np.ndarray]:
        level = torch.tensor([quality_to_level(h.quality) for h in headers], device=self.device)
        out = []
        for x, filt in zip(self._decoded(m, level, y_hat, [(h.width, h.height) for h in headers]),
                           filters, strict=True):
            if filt is not None:
                x = filt.apply(x[None])[0].clamp(0, 255)
            out.append(torch.round(x).to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy())
        return out

    # ---- inspection --------------------------------------------------------------------------

    @staticmethod
    def info(data: FileInput) -> tuple[container.Header, int]:
        """Header of a .vaez file (verified, checksum included) and its total size in bytes."""
        raw = _read(data)
        header, _ = container.unpack(raw)
        return header, len(raw)
