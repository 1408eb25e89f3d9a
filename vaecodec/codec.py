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

Large images: every network runs tile by tile (g_a and g_s: :func:`vaecodec.transforms.tiled`; h_a,
h_s and the context: :class:`vaecodec.latent_codec.LatentCodec`), the Wiener filter in bands of rows
(:meth:`vaecodec.wiener.WienerFilter.bands`), and the pixels are converted to and from float a band
at a time, so that besides the input and output buffers a call holds one float copy of the image and
its integer latents, and takes time in proportion to its pixels (``bench/results/scaling.md``).

The Wiener filter (:mod:`vaecodec.wiener`) is fitted by default: it runs the decoder's synthesis in
the encoder, which costs encoding time for fewer bits at the same quality
(``bench/results/wiener.md``); ``wiener=False`` (CLI ``--no-filter``) skips it and writes files the
same decoder reads.
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, TypeVar

import numpy as np
import torch
from PIL import Image

from . import container, image, metadata, pipeline, rate_control, wiener
from .errors import CorruptFileError, ImageError, LimitError, UnsupportedFileError, VaecodecError
from .files import FileInput, read_bytes
from .latent_codec import Latents, Streams
from .latent_tools import ImageLatents
from .metadata import Metadata
from .model import Model, load
from .quality import (
    DEFAULT_EFFORT,
    DEFAULT_QUALITY,
    EFFORT_STEPS,
    QUALITY_MAX,
    QUALITY_MIN,
    check_effort,
    check_quality,
    level_of,
)
from .refine import refine
from .transforms import padded_size, tiled

T = TypeVar("T")
OnError = Literal["raise", "return"]
Output = Literal["pil", "numpy", "torch"]
OUTPUTS = ("pil", "numpy", "torch")


@dataclass(frozen=True)
class _Options:
    """How to encode, beyond the quality."""

    effort: int
    wiener: bool
    strip: bool


def _as(output: Output, img: Image.Image) -> Image.Image | np.ndarray | torch.Tensor:
    """A decoded image in the form the caller asked for."""
    if output == "pil":
        return img
    arr = np.asarray(img)
    if output == "numpy":
        return arr
    t = torch.from_numpy(arr.copy())
    return t.permute(2, 0, 1) if arr.ndim == 3 else t[None]


def _to_uint8(x: torch.Tensor, filt: wiener.WienerFilter | None) -> np.ndarray:
    """A synthesis (3, H, W) in grey levels -> the decoded (H, W, 3) uint8: Wiener-filtered when the
    file has a filter, clamped, rounded. Band by band (:meth:`WienerFilter.bands`), so that no second
    full-resolution float copy of the image is made."""
    height, rows = x.shape[1], 256
    out = np.empty((height, x.shape[2], 3), dtype=np.uint8)
    if filt is None:  # the synthesis is clamped already
        bands = ((r0, r0 + rows, x[None, :, r0 : r0 + rows]) for r0 in range(0, height, rows))
    else:
        bands = ((r0, r1, band.clamp_(0, 255)) for r0, r1, band in filt.bands(x[None]))
    for r0, r1, band in bands:
        out[r0:r1] = torch.round(band[0]).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return out


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
    metadata: Metadata

    @property
    def size(self) -> tuple[int, int]:
        return self.header.width, self.header.height

    @property
    def latent_shape(self) -> tuple[int, int]:
        hp, wp = padded_size(*self.size)
        return hp // 16, wp // 16


def _guard(fn: Callable[[], T]) -> T | VaecodecError:
    """fn(), or the user-facing error it raised. Running out of memory is one too (LimitError): one
    image too large for the machine must not stop a batch."""
    try:
        try:
            return fn()
        except MemoryError:
            raise LimitError("out of memory") from None
        except RuntimeError as exc:  # torch's allocation failures, on the CPU and CUDA
            if "out of memory" not in str(exc) and "allocate" not in str(exc):
                raise
            raise LimitError(f"out of memory ({str(exc).splitlines()[0][:200]})") from None
    except VaecodecError as exc:
        return exc


def _each(out: list, idx: list[int], results: list | VaecodecError) -> None:
    """A group's results into their places, or the group's error into each of them."""
    for k, i in enumerate(idx):
        out[i] = results if isinstance(results, VaecodecError) else results[k]


def _chunks(keys: list, batch_size: int) -> Iterable[list[int]]:
    """Indices grouped by equal key (None: left out), in chunks of at most batch_size."""
    groups: dict = defaultdict(list)
    for i, key in enumerate(keys):
        if key is not None:
            groups[key].append(i)
    for idx in groups.values():
        for start in range(0, len(idx), batch_size):
            yield idx[start : start + batch_size]


class _Compress(NamedTuple):
    """What :meth:`Codec.compress_iter` asks of every chunk: a quality or a target, and the options."""

    quality: float | None
    targets: tuple[float | None, float | None, float | None]  # target_bpp, target_size, target_psnr
    opts: _Options


def _compress_chunk(codec: Codec, job: tuple[list, _Compress]) -> list[bytes | VaecodecError]:
    """One chunk of :meth:`Codec.compress_iter`, here or in a worker (:mod:`vaecodec.pipeline`)."""
    return codec._compress_list(*job)


def _decompress_chunk(codec: Codec, job: tuple[list, Output]) -> list:
    """One chunk of :meth:`Codec.decompress_iter`, here or in a worker."""
    return codec._decompress_list(*job)


def _portable(item: object) -> object:
    """An input as it can be sent to a worker process: an open file is read here, in order."""
    return read_bytes(item) if hasattr(item, "read") else item


class Codec:
    """A loaded vaecodec model.

    >>> codec = Codec()                    # the shipped model, CUDA if available
    >>> data = codec.compress("photo.png", quality=5)
    >>> codec.decompress(data).save("photo.decoded.png")

    ``model``: None for the shipped model, or the path of another weights file (a training run's
    export, say). A file names the model that made it and is decoded only by that model.
    ``max_pixels``: the largest image, in pixels, that is coded or decoded (like Pillow's
    ``MAX_IMAGE_PIXELS``: a file's declared size is checked before anything is allocated); None or
    0 for the format's own limit, ``container.MAX_PIXELS``.
    """

    def __init__(self, model: str | os.PathLike | None = None, device: str | torch.device = "auto",
                 max_pixels: int | None = None, precision: str | None = None) -> None:
        self.device = resolve_device(device)
        limit = container.MAX_PIXELS if max_pixels is None or max_pixels == 0 else int(max_pixels)
        if limit < 0:
            raise VaecodecError(f"max_pixels must be 0 (no limit) or positive, got {max_pixels}")
        self.max_pixels = min(limit, container.MAX_PIXELS)
        self.source = None if model is None else os.fspath(model)  # what worker processes load
        self.precision = precision
        self.model: Model = load(model, self.device, precision)

    @property
    def default_batch_size(self) -> int:
        """Images per network pass when the caller does not say (see the module docstring)."""
        return 8 if self.device.type == "cuda" else 1

    # ---- compression -------------------------------------------------------------------------

    def compress(self, img: image.ImageInput, quality: float | None = None, effort: int = DEFAULT_EFFORT,
                 wiener: bool = True, *, strip: bool = False, target_bpp: float | None = None,
                 target_size: int | None = None, target_psnr: float | None = None) -> bytes:
        """Compress one image (any :data:`vaecodec.image.ImageInput`) to the bytes of a .vaez file.

        ``quality``: 1 (smallest) to 10 (best), fractions allowed, default 7; or instead one target
        (:mod:`vaecodec.rate_control`): ``target_bpp`` or ``target_size`` (bytes) gives the best
        quality whose file fits, ``target_psnr`` (dB) the smallest file that reaches it. ``effort``
        0..2 trades encoding time for smaller files at the same quality (:mod:`vaecodec.refine`);
        ``wiener`` fits and sends the per-image filter (:mod:`vaecodec.wiener`); ``strip`` leaves
        out the ICC profile, EXIF and XMP (:mod:`vaecodec.metadata`)."""
        return self.compress_batch([img], quality, effort=effort, on_error="raise", wiener=wiener,
                                   strip=strip, target_bpp=target_bpp, target_size=target_size,
                                   target_psnr=target_psnr)[0]

    def compress_batch(
        self,
        images: Sequence[image.ImageInput],
        quality: float | None = None,
        batch_size: int | None = None,
        on_error: OnError = "raise",
        effort: int = DEFAULT_EFFORT,
        wiener: bool = True,
        *,
        strip: bool = False,
        target_bpp: float | None = None,
        target_size: int | None = None,
        target_psnr: float | None = None,
        workers: int = 1,
    ) -> list[bytes | VaecodecError]:
        """Compress many images with one model; results are in input order, and with
        ``on_error="return"`` an image that fails is returned as its error (options as
        :meth:`compress`; with a target, each image gets the quality that meets it). ``workers``
        as :meth:`compress_iter`."""
        return list(self.compress_iter(images, quality, batch_size, on_error, effort, wiener, strip=strip,
                                       target_bpp=target_bpp, target_size=target_size,
                                       target_psnr=target_psnr, workers=workers))

    def compress_iter(
        self,
        images: Iterable[image.ImageInput],
        quality: float | None = None,
        batch_size: int | None = None,
        on_error: OnError = "raise",
        effort: int = DEFAULT_EFFORT,
        wiener: bool = True,
        *,
        strip: bool = False,
        target_bpp: float | None = None,
        target_size: int | None = None,
        target_psnr: float | None = None,
        workers: int = 1,
    ) -> Iterator[bytes | VaecodecError]:
        """Compress the images of any iterable, yielding each file's bytes in input order, taking
        only a few images ahead of the results: a collection larger than memory streams through.

        ``workers=N`` codes in N worker processes, each with its own copy of the model on this
        codec's device (:mod:`vaecodec.pipeline`); the bytes are the same as with one. Options as
        :meth:`compress_batch`; options are checked here, before any image is read."""
        targets = (target_bpp, target_size, target_psnr)
        rate_control.target_of(1, quality, *targets)  # refuses conflicting options before any work
        if all(t is None for t in targets):
            quality = check_quality(DEFAULT_QUALITY if quality is None else quality)
        request = _Compress(quality, targets, _Options(check_effort(effort), wiener, strip))
        return self._stream(_compress_chunk, request, images, batch_size, on_error, workers)

    def _compress_list(self, images: list[image.ImageInput], request: _Compress
                       ) -> list[bytes | VaecodecError]:
        """The files of a list of images (what one chunk of :meth:`compress_iter` does), an image
        that fails as its error; same-size images go through the networks together."""
        quality, targets, opts = request
        pics = [_guard(lambda src=src: self._load(src)) for src in images]
        out: list = [p if isinstance(p, VaecodecError) else None for p in pics]
        if any(t is not None for t in targets):
            for i, pic in enumerate(pics):
                if out[i] is None:
                    target = rate_control.target_of(pic.size[0] * pic.size[1], None, *targets)
                    out[i] = _guard(lambda pic=pic, t=target: self._compress_to(pic, t, opts))
            return out
        keys = [None if out[i] is not None else padded_size(*p.size) for i, p in enumerate(pics)]
        for idx in _chunks(keys, len(images)):
            _each(out, idx, _guard(lambda idx=idx: self._compress_group([pics[i] for i in idx],
                                                                                   quality, opts)))
        return out

    def _stream(self, task: Callable[[Codec, tuple[list, object]], list], request: object,
                items: Iterable, batch_size: int | None, on_error: OnError, workers: int) -> Iterator:
        """``task`` over chunks of ``batch_size`` items, here or in ``workers`` processes, results
        in order; an item's error is raised (``on_error="raise"``) or yielded in its place."""
        pipeline.check_workers(workers)
        if on_error not in ("raise", "return"):
            raise VaecodecError(f"on_error must be 'raise' or 'return', got {on_error!r}")
        size = batch_size or self.default_batch_size

        def results() -> Iterator:
            if workers == 1:
                for chunk in pipeline.chunks(items, size):
                    yield from task(self, (chunk, request))
                return
            spec = pipeline.CodecSpec(self.source, str(self.device), self.max_pixels,
                                      pipeline.threads_per_worker(workers), self.precision)
            with pipeline.Pool(spec, workers) as pool:
                jobs = (([_portable(x) for x in chunk], request) for chunk in pipeline.chunks(items, size))
                for done in pool.map(task, jobs):
                    yield from done

        def checked() -> Iterator:
            for result in results():
                if on_error == "raise" and isinstance(result, VaecodecError):
                    raise result
                yield result

        return checked()

    def _load(self, src: image.ImageInput) -> image.Picture:
        """An input image, refused if the format cannot hold it or it is above the pixel limit."""
        pic = image.load(src, self.max_pixels)
        try:
            container.check_size(*pic.size)
        except CorruptFileError as exc:
            raise ImageError(str(exc)) from None
        return pic

    def _level(self, quality: float, n: int) -> torch.Tensor:
        return torch.full((n,), level_of(quality), device=self.device)

    def _pixels(self, pics: list[image.Picture]) -> torch.Tensor:
        """Pictures of one padded size as a batch (B, 3, H, W) in [0, 1] on the device, edges
        replicated into the padding (:func:`vaecodec.transforms.pad`). Converted a band of rows at a
        time into the one batch tensor, so that the only float copy of an image is its place there."""
        hp, wp = padded_size(*pics[0].size)
        out = torch.empty(len(pics), 3, hp, wp, device=self.device)
        for i, p in enumerate(pics):
            (w, h), band = p.size, max(1, (1 << 20) // p.size[0])
            for r0 in range(0, h, band):
                rgb = torch.from_numpy(p.rgb[r0 : r0 + band].copy()).to(self.device)
                out[i, :, r0 : r0 + len(rgb), :w] = rgb.permute(2, 0, 1).float().div(255)
            out[i, :, :h, w:] = out[i, :, :h, w - 1 : w]  # replicate: the last column, then the last row
            out[i, :, h:, :] = out[i, :, h - 1 : h, :]
        return out

    @torch.no_grad()
    def analysis(self, images: Sequence[image.ImageInput], quality: float) -> torch.Tensor:
        """g_a's float latents y (B, M, H/16, W/16) of same-size images, gain applied, unrounded."""
        pics = [self._load(img) for img in images]
        return self.model.analyze(self._pixels(pics), self._level(check_quality(quality), len(pics)))

    @torch.no_grad()  # not inference_mode: the effort search (refine.py) needs autograd
    def latents(self, images: Sequence[image.ImageInput], quality: float, effort: int = DEFAULT_EFFORT
                ) -> Latents:
        """The integer latents that :meth:`compress` codes for same-size images."""
        pics = [self._load(img) for img in images]
        return self._latents(pics, check_quality(quality), check_effort(effort))

    def _latents(self, pics: list[image.Picture], quality: float, effort: int) -> Latents:
        m = self.model
        x, level = self._pixels(pics), self._level(quality, len(pics))
        y = m.analyze(x, level)
        if not EFFORT_STEPS[effort]:  # no search: the image's float copy is done with, and h_s's
            del x  # parameters of the whole image are not needed either
            return m.latent.latents(y)
        z, mean, index = m.latent.hyper(y)
        y = refine(m, x, y, mean, index, level, pics[0].size, effort)
        del x  # the image's float copy is done with: freed before the latents' own peak
        return m.latent.quantize(y, z, mean, index)

    @torch.no_grad()
    def _compress_group(self, pics: list[image.Picture], quality: float, opts: _Options) -> list[bytes]:
        m = self.model
        latents = self._latents(pics, quality, opts.effort)
        coded = m.latent.encode(latents)
        y_hat = latents.y_hat if opts.wiener else None
        del latents  # only y_hat is needed past here, for the filter: a sixth of the integers' size
        filters = self._filters(pics, quality, y_hat) if opts.wiener else [b""] * len(pics)
        return [self._pack(pic, quality, streams, filt, opts)
                for pic, streams, filt in zip(pics, coded, filters, strict=True)]

    def _filters(self, pics: list[image.Picture], quality: float, y_hat: torch.Tensor) -> list[bytes]:
        """Each image's Wiener filter section (b"" for none), fitted to the decoder's synthesis of
        its decoded latents (:attr:`Latents.y_hat`)."""
        level = self._level(quality, len(pics))
        decoded = self.synthesis(y_hat, level, [p.size for p in pics])
        fitted = [self._fit_filter(x, pic, level[:1]) for x, pic in zip(decoded, pics, strict=True)]
        return [wiener.encode(filt) if filt is not None else b"" for filt in fitted]

    def _fit_filter(self, decoded: torch.Tensor, pic: image.Picture, level: torch.Tensor
                    ) -> wiener.WienerFilter | None:
        """The Wiener filter for one image's synthesis (3, H, W) at its level (1,), or None."""
        lam = float(self.model.gains.lambda_at(level))
        return wiener.fit(decoded.cpu().numpy(), pic.rgb.transpose(2, 0, 1), lam)

    def _pack(self, pic: image.Picture, quality: float, streams: Streams, filt: bytes, opts: _Options
              ) -> bytes:
        alpha = image.encode_alpha(pic.alpha) if pic.alpha is not None else b""
        meta = b"" if opts.strip else metadata.encode(pic.metadata)
        header = container.Header(self.model.model_id, pic.mode, quality, *pic.size)
        payload = container.Payload(streams.stream, streams.escapes, alpha, filt, meta, streams.checksum)
        return container.pack(header, payload)

    @torch.no_grad()
    def _compress_to(self, pic: image.Picture, target: rate_control.Target, opts: _Options) -> bytes:
        """The file that meets a size or PSNR target best (:mod:`vaecodec.rate_control`): a search
        over the quality with trial encodes that reuse g_a's features, then whole encodes checked
        against the target, the overhead the trials cannot see (the Wiener filter's bytes, the
        effort search's change) corrected."""
        m = self.model
        features = m.features(self._pixels([pic]))
        overhead = len(self._pack(pic, QUALITY_MIN, Streams(b"", b""), b"", opts))

        def trial(quality: float) -> float:
            level = self._level(quality, 1)
            y = features * m.gains.gain(level)
            latents = m.latent.latents(y)
            if target.kind == "bytes":
                streams = m.latent.encode(latents)[0]
                return overhead + len(streams.stream) + len(streams.escapes)
            decoded = self.synthesis(latents.y_hat, level, [pic.size])[0]
            # the filter can move the PSNR a long way: the trial counts it
            filt = self._fit_filter(decoded, pic, level) if opts.wiener else None
            return rate_control.psnr(_to_uint8(decoded, filt), pic.rgb)

        def final(quality: float) -> tuple[bytes, float]:
            data = self._compress_group([pic], quality, opts)[0]
            if target.kind == "bytes":
                return data, len(data)
            parsed = self.parse(data)
            return data, rate_control.psnr(self._rgb([parsed], [self._decode(parsed).y_hat])[0], pic.rgb)

        with warnings.catch_warnings():  # the trials' own unreachable-target warnings are not final
            warnings.simplefilter("ignore")
            quality = rate_control.search(trial, target)
        data, measured = final(quality)
        for _ in range(rate_control.MAX_CORRECTIONS):
            if target.met(measured):
                return data
            if target.kind == "bytes" and quality > QUALITY_MIN:  # trials missed some bytes: count them
                overhead += measured - trial(quality)
                lowest = max(QUALITY_MIN, quality - rate_control.CORRECTION_RANGE)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    start = lowest if target.met(trial(lowest)) else QUALITY_MIN
                    quality = rate_control.search(trial, target, start, quality)
            elif target.kind == "psnr" and quality < QUALITY_MAX:
                quality = min(quality + rate_control.PSNR_STEP, QUALITY_MAX)
            else:
                break
            data, measured = final(quality)
        if not target.met(measured):
            rate_control.unreachable(target, quality, measured)
        return data

    # ---- decompression -----------------------------------------------------------------------

    def decompress(self, data: FileInput, output: Output = "pil") -> Image.Image | np.ndarray | torch.Tensor:
        """Decode a .vaez file (its bytes, a path or a binary file object) to an image in its
        original size and colour mode, with its metadata: a PIL image (``output="pil"``, metadata in
        ``info``), a uint8 numpy array HxW or HxWxC (``"numpy"``) or a uint8 tensor CxHxW
        (``"torch"``)."""
        return self.decompress_batch([data], on_error="raise", output=output)[0]

    def decompress_batch(
        self,
        files: Sequence[FileInput | VaecodecError],
        batch_size: int | None = None,
        on_error: OnError = "raise",
        output: Output = "pil",
        workers: int = 1,
    ) -> list[Image.Image | np.ndarray | torch.Tensor | VaecodecError]:
        """Decode many .vaez files; results are in input order. An error among the inputs (what
        :meth:`compress_batch` returns for an image that failed) is passed through as it is.
        ``workers`` as :meth:`compress_iter`."""
        return list(self.decompress_iter(files, batch_size, on_error, output, workers))

    def decompress_iter(
        self,
        files: Iterable[FileInput | VaecodecError],
        batch_size: int | None = None,
        on_error: OnError = "raise",
        output: Output = "pil",
        workers: int = 1,
    ) -> Iterator[Image.Image | np.ndarray | torch.Tensor | VaecodecError]:
        """Decode the files of any iterable, yielding images in input order and reading only a few
        files ahead (as :meth:`compress_iter`, ``workers`` included)."""
        if output not in OUTPUTS:
            raise VaecodecError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        return self._stream(_decompress_chunk, output, files, batch_size, on_error, workers)

    def _decompress_list(self, files: list[FileInput | VaecodecError], output: Output) -> list:
        """The images of a list of files (one chunk of :meth:`decompress_iter`), a file that fails as
        its error; files whose latents have one shape go through the synthesis together."""
        parsed = [_guard(lambda f=f: self.parse(f)) for f in files]
        # each file's y_hat, kept until its group is synthesized: a sixth of its integer latents' size
        y_hats = [p if isinstance(p, VaecodecError) else _guard(lambda p=p: self._decode(p).y_hat)
                  for p in parsed]
        out: list = [v if isinstance(v, VaecodecError) else None for v in y_hats]
        keys = [None if out[i] is not None else p.latent_shape for i, p in enumerate(parsed)]
        for idx in _chunks(keys, len(files)):
            _each(out, idx, _guard(lambda idx=idx: self._images([parsed[i] for i in idx],
                                                                          [y_hats[i] for i in idx], output)))
        return out

    def _images(self, group: list[Parsed], y_hats: list[torch.Tensor], output: Output) -> list:
        return [_as(output, image.to_pil(image.Picture(rgb, p.header.mode, p.alpha, p.metadata)))
                for p, rgb in zip(group, self._rgb(group, y_hats), strict=True)]

    def _rgb(self, group: list[Parsed], y_hats: list[torch.Tensor]) -> list[np.ndarray]:
        """The decoded RGB (H, W, 3) uint8 of files whose decoded latents (:attr:`Latents.y_hat`, (1,
        M, h, w) each) have one shape."""
        return self._rgb_of(y_hats, [p.header.quality for p in group], [p.filter for p in group],
                            [p.size for p in group])

    def _rgb_of(self, y_hats: list[torch.Tensor], qualities: list[float],
                filters: list[wiener.WienerFilter | None], sizes: list[tuple[int, int]]) -> list[np.ndarray]:
        """The RGB (H, W, 3) uint8 of decoded latents of one shape, each synthesized at its quality,
        cropped to its size and Wiener-filtered when it has a filter: how :meth:`decompress` and
        :meth:`decode_latents` both draw."""
        level = torch.tensor([level_of(q) for q in qualities], device=self.device)
        y_hat = y_hats[0] if len(y_hats) == 1 else torch.cat(y_hats)
        return [_to_uint8(x, f) for f, x in zip(filters, self.synthesis(y_hat, level, sizes), strict=True)]

    def parse(self, src: FileInput | VaecodecError) -> Parsed:
        """Read and check a .vaez file: container, model, alpha plane, filter and metadata sections.
        An error in place of a file (a failed item of :meth:`compress_batch`) is raised."""
        if isinstance(src, VaecodecError):
            raise src
        header, payload = container.unpack(read_bytes(src))
        image.check_pixels(header.width, header.height, self.max_pixels)
        if header.model_id != self.model.model_id:
            from . import __version__

            raise UnsupportedFileError(
                f"file was made with model {header.model_id.hex()}, which this vaecodec {__version__} "
                f"does not have (it has {self.model.name}, {self.model.model_id.hex()})")
        alpha = image.decode_alpha(payload.alpha, header.width, header.height) if payload.alpha else None
        return Parsed(header, payload, alpha, wiener.decode(payload.filter),
                      metadata.decode(payload.metadata))

    def _decode(self, parsed: Parsed) -> Latents:
        streams = Streams(parsed.payload.stream, parsed.payload.escapes, parsed.payload.checksum)
        return self.model.latent.decompress(streams, parsed.latent_shape, self.device)

    def decode_integers(self, data: FileInput) -> dict[str, np.ndarray]:
        """Every integer the decoder derives from a file: z and y symbols, the prior's fixed-point
        means and scale indices. These must be identical on every device and thread count, which is
        what the golden-file tests and the cross-device bench check."""
        return self._decode(self.parse(data)).numpy()

    # ---- latents (the tools on them: vaecodec.latent_tools) ----------------------------------

    @torch.no_grad()  # not inference_mode: the effort search (refine.py) needs autograd
    def encode_latents(self, img: image.ImageInput, quality: float | None = None,
                       effort: int = DEFAULT_EFFORT) -> ImageLatents:
        """One image's latents, the integers :meth:`compress` codes for it (the same
        :meth:`_latents`), with the exact bits of each symbol (:class:`ImageLatents`)."""
        pic = self._load(img)
        quality = check_quality(DEFAULT_QUALITY if quality is None else quality)
        latents = self._latents([pic], quality, check_effort(effort))
        return ImageLatents.of(latents, quality, pic.size, self.model.latent)

    def file_latents(self, data: FileInput) -> ImageLatents:
        """The latents a .vaez file holds, decoded as :meth:`decompress` decodes them."""
        parsed = self.parse(data)
        return ImageLatents.of(self._decode(parsed), parsed.header.quality, parsed.size, self.model.latent)

    def decode_latents(self, latents: ImageLatents) -> Image.Image:
        """The RGB image of latents, drawn as :meth:`decompress` draws a file's, without the Wiener
        filter a file carries beside its latents."""
        y_hat = latents.batch(self.device).y_hat
        return Image.fromarray(self._rgb_of([y_hat], [latents.quality], [None], [latents.size])[0])

    def interpolate(self, a: image.ImageInput, b: image.ImageInput, t: float, quality: float | None = None
                    ) -> Image.Image:
        """The decoded linear blend ``(1 - t) a + t b`` of two images' decoded latents at one quality,
        b resized to a's size if they differ (:func:`vaecodec.latent_tools.interpolate`)."""
        from .latent_tools import interpolate

        return interpolate(self, a, b, [t], quality)[0]

    @torch.inference_mode()
    def synthesis(self, y_hat: torch.Tensor, level: torch.Tensor, sizes: list[tuple[int, int]]
                  ) -> list[torch.Tensor]:
        """The synthesis of each image's latents at its level, cropped to its (width, height): (3, H,
        W) grey levels in 0..255, float, before the Wiener filter and rounding."""
        m = self.model
        x = tiled(lambda v: m.synthesize(v, level).clamp_(0, 1).mul_(255), y_hat, 1, 16)
        return [x[i, :, :h, :w] for i, (w, h) in enumerate(sizes)]

    # ---- inspection --------------------------------------------------------------------------

    @staticmethod
    def info(data: FileInput) -> tuple[container.Header, int]:
        """Header of a .vaez file (verified, checksum included) and its total size in bytes."""
        raw = read_bytes(data)
        return container.unpack(raw)[0], len(raw)
