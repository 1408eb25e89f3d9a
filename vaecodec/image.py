"""Image I/O: whatever the user hands us -> 8-bit RGB (+ optional alpha), and back.

Colour handling (also in the README):

* RGB is coded as is. Greyscale (``L``, ``1``) is coded through the RGB model with the grey plane
  replicated and decoded back to ``L`` (the channel average, rounded).
* Palette (``P``) images are expanded to RGB (RGBA if the palette has transparency) and decode as
  such: a lossy codec's output no longer fits the original palette, and re-quantizing to it would
  add a second, uncontrolled error.
* Alpha (``RGBA``, ``LA``, palette transparency) is never dropped: it is stored losslessly in the
  container as a PNG of the alpha plane.
* 16-bit input (and 32-bit ``I``/``F`` greyscale) is reduced to 8 bits with a warning; CMYK, YCbCr,
  LAB and HSV are converted to RGB with a warning.
* The EXIF orientation is applied before coding, so the decoded image looks the way viewers showed
  the original. The ICC profile, EXIF and XMP are kept (:mod:`vaecodec.metadata`).
* Inputs: a path, the bytes of an image file or a binary file object, a PIL image, a numpy array
  (HxW, HxWx3, HxWx4 or CxHxW with C = 1, 3, 4) or a torch tensor (CxHxW or 1xCxHxW, on any
  device), uint8 (numpy also uint16) or float in [0, 1].
* Animated images (GIF, APNG, WebP) are coded from their first frame, with a warning.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import metadata
from .errors import CorruptFileError, ImageError, LimitError, OutputError
from .files import write_atomic
from .metadata import Metadata

# Image files the training loader takes from a folder (and the benchmarks): formats Pillow reads.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".ppm", ".tif", ".tiff", ".avif"})


@dataclass
class Picture:
    """An image as the codec sees it."""

    rgb: np.ndarray  # (H, W, 3) uint8
    mode: str  # what to decode back to: "RGB", "L", "RGBA" or "LA"
    alpha: np.ndarray | None = None  # (H, W) uint8 when mode has alpha
    metadata: Metadata = field(default_factory=Metadata)

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]


# (torch tensors too: named by duck type below, so that this module need not import torch)
ImageInput = (str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | Image.Image | np.ndarray
              | Picture)


def _is_16bit(im: Image.Image) -> bool:
    """Pillow reads 16-bit RGB(A) PNGs as 8-bit modes; only the (not yet loaded) tile tells."""
    return any(";16" in str(t.args) for t in getattr(im, "tile", None) or [])


def _from_pil(im: Image.Image, deep: bool = False) -> Picture:
    if getattr(im, "n_frames", 1) > 1:
        warnings.warn(f"animated image ({im.n_frames} frames): only the first frame is coded", stacklevel=3)
    im = ImageOps.exif_transpose(im)
    pic = _pixels_of(im, deep)
    pic.metadata = metadata.from_pil(im)
    return pic


def _pixels_of(im: Image.Image, deep: bool) -> Picture:
    if deep or im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        warnings.warn("16-bit image reduced to 8 bits per channel", stacklevel=3)
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 or im.mode.startswith("I;16") else 255.0
        grey = np.clip(np.round(arr * (255.0 / peak)), 0, 255).astype(np.uint8)
        return Picture(np.repeat(grey[:, :, None], 3, axis=2), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "PA":
        im = im.convert("RGBA")
    elif im.mode == "1":
        im = im.convert("L")
    elif im.mode not in ("RGB", "L", "RGBA", "LA"):
        warnings.warn(f"{im.mode} image converted to RGB", stacklevel=3)
        im = im.convert("RGB")
    arr = np.asarray(im)
    if im.mode in ("L", "LA"):
        grey = arr if im.mode == "L" else arr[:, :, 0]
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
    else:
        rgb = arr[:, :, :3]
    alpha = arr[:, :, -1].copy() if im.mode in ("RGBA", "LA") else None
    return Picture(np.ascontiguousarray(rgb), im.mode, alpha)


def _from_array(arr: np.ndarray) -> Picture:
    if arr.ndim == 3 and arr.shape[2] > 4 and arr.shape[0] in (1, 3, 4):
        arr = arr.transpose(1, 2, 0)  # CxHxW: taken as such only where it cannot be HxWxC
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or arr.min(initial=0) < 0 or arr.max(initial=0) > 1:
            raise ImageError("float images must hold values in [0, 1]")
        arr = np.round(arr * 255).astype(np.uint8)
    if arr.dtype == np.uint16:
        warnings.warn("16-bit array reduced to 8 bits per channel", stacklevel=3)
        arr = ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if arr.dtype != np.uint8:
        raise ImageError(f"arrays must be uint8, uint16 or float in [0, 1], got {arr.dtype}")
    if arr.ndim == 2:
        return Picture(np.repeat(arr[:, :, None], 3, axis=2), "L")
    if arr.ndim == 3 and arr.shape[2] == 3:
        return Picture(np.ascontiguousarray(arr), "RGB")
    if arr.ndim == 3 and arr.shape[2] == 4:
        return Picture(np.ascontiguousarray(arr[:, :, :3]), "RGBA", arr[:, :, 3].copy())
    raise ImageError(f"arrays must be HxW, HxWx3, HxWx4 or CxHxW, got shape {arr.shape}")


def _from_tensor(t: Any) -> Picture:
    """A torch tensor, CxHxW or 1xCxHxW, uint8 or float in [0, 1], on any device."""
    t = t.detach()
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
        raise ImageError(f"tensors must be CxHxW or 1xCxHxW with C = 1, 3 or 4, got shape {tuple(t.shape)}")
    if t.is_floating_point():
        t = t.float()
    return _from_array(t.cpu().numpy().transpose(1, 2, 0))


def check_pixels(width: int, height: int, max_pixels: int | None) -> None:
    """LimitError when an image is larger than ``max_pixels`` (None: no limit)."""
    if max_pixels is not None and width * height > max_pixels:
        raise LimitError(f"image of {width}x{height} pixels is above the limit of {max_pixels} pixels "
                         "(max_pixels, CLI --max-pixels)")


def load(source: ImageInput, max_pixels: int | None = None) -> Picture:
    """Read any :data:`ImageInput` (module docstring). Raises ImageError with a one-line reason, and
    LimitError for an image above ``max_pixels``, which an image file's header tells before any
    pixel is decoded."""
    if isinstance(source, Picture):
        return source
    if isinstance(source, np.ndarray):
        pic = _from_array(source)
    elif type(source).__module__.startswith("torch") and hasattr(source, "detach"):
        pic = _from_tensor(source)
    elif isinstance(source, Image.Image):
        pic = _from_pil(source, _is_16bit(source))
    else:
        pic = _open(source, max_pixels)
    check_pixels(*pic.size, max_pixels)
    if pic.rgb.shape[0] < 1 or pic.rgb.shape[1] < 1:
        raise ImageError("image has no pixels")
    return pic


def _open(source: str | os.PathLike | bytes | bytearray | memoryview | BinaryIO, max_pixels: int | None
          ) -> Picture:
    """Decode an image file: a path, its bytes, or a binary file object."""
    if isinstance(source, bytes | bytearray | memoryview):
        name, source = "image data", io.BytesIO(bytes(source))
    elif hasattr(source, "read"):
        name = str(getattr(source, "name", "image stream"))
    else:
        name = str(source)
        source = Path(source)
    try:
        with Image.open(source) as im:
            if im.format == "VAEZ":  # with vaecodec.pillow imported, Pillow reads .vaez files too
                raise ImageError(f"{name}: is a .vaez file already (decompress it first)")
            check_pixels(*im.size, max_pixels)
            deep = _is_16bit(im)
            im.load()
            return _from_pil(im, deep)
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a directory") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image Pillow can read") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{name}: cannot read image ({exc})") from None


def to_pil(pic: Picture) -> Image.Image:
    """The decoded picture as a PIL image in its original colour mode."""
    if pic.mode in ("L", "LA"):
        grey = np.round(pic.rgb.astype(np.float32).mean(axis=2)).astype(np.uint8)
        planes = [grey] if pic.mode == "L" else [grey, pic.alpha]
    else:
        planes = [pic.rgb[:, :, c] for c in range(3)] + ([pic.alpha] if pic.mode == "RGBA" else [])
    arr = np.stack(planes, axis=2) if len(planes) > 1 else planes[0]
    return metadata.attach(Image.fromarray(np.ascontiguousarray(arr), pic.mode), pic.metadata)


def encode_alpha(alpha: np.ndarray) -> bytes:
    """Lossless alpha plane as a compact PNG."""
    buf = io.BytesIO()
    Image.fromarray(alpha, "L").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def decode_alpha(data: bytes, width: int, height: int) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            if im.size != (width, height) or im.mode != "L":
                raise CorruptFileError("alpha plane does not match the image")
            return np.asarray(im).copy()
    except CorruptFileError:
        raise
    except Exception as exc:  # Pillow raises many types on damaged PNGs (SyntaxError, bombs, ...)
        raise CorruptFileError(f"alpha plane is damaged ({type(exc).__name__})") from None


def output_format(path: Path) -> str:
    """Pillow format name for an output path's extension; OutputError if it has none we can write."""
    ext = path.suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise OutputError(f"{path}: cannot write images with extension '{ext or '(none)'}'")
    return fmt


LOSSY = ("JPEG", "AVIF")  # formats written lossily whatever is asked; WebP is lossless unless a quality is
DEFAULT_OUT_QUALITY = {"JPEG": 95, "AVIF": 90, "WEBP": 90}


def encode(img: Image.Image, fmt: str, quality: int | None = None, name: str = "output") -> bytes:
    """A decoded image as the bytes of an image file in Pillow format ``fmt``, with its metadata
    where the format can carry it. Alpha is never dropped: formats without it are refused. JPEG and
    AVIF are lossy (at ``quality``, or a high default), and say so in a warning; WebP is lossless
    unless a ``quality`` is given."""
    if img.mode in ("RGBA", "LA") and fmt in ("JPEG", "BMP", "PPM"):
        raise OutputError(f"{name}: {fmt} cannot store the image's alpha channel; use .png or .webp")
    if quality is not None and not 1 <= quality <= 100:
        raise OutputError(f"output quality must be between 1 and 100, got {quality}")
    options = metadata.save_options(img, fmt)
    lossy = fmt in LOSSY or (fmt == "WEBP" and quality is not None)
    if lossy:
        q = quality if quality is not None else DEFAULT_OUT_QUALITY[fmt]
        warnings.warn(f"{fmt} output re-encodes the decoded image lossily (quality {q}; "
                      "--out-quality sets it, PNG is lossless)", stacklevel=2)
        options["quality"] = q
        if fmt == "JPEG":
            options["subsampling"] = 0  # 4:4:4: the decoded colour detail is kept
    elif fmt == "WEBP":
        options.update(lossless=True, exact=True)  # exact: keep the colour under transparent pixels
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def save(img: Image.Image, path: Path, force: bool = False, quality: int | None = None) -> None:
    """:func:`encode` to a file, written atomically; an existing file is replaced only with ``force``."""
    data = encode(img, output_format(path), quality, str(path))
    write_atomic(path, lambda f: f.write(data), force)
