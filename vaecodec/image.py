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
  the original.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import CorruptFileError, ImageError, OutputError
from .files import write_atomic

# Image files the training loader takes from a folder (and the benchmarks): formats Pillow reads.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".ppm", ".tif", ".tiff", ".avif"})


@dataclass
class Picture:
    """An image as the codec sees it."""

    rgb: np.ndarray  # (H, W, 3) uint8
    mode: str  # what to decode back to: "RGB", "L", "RGBA" or "LA"
    alpha: np.ndarray | None = None  # (H, W) uint8 when mode has alpha

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]


ImageInput = str | os.PathLike | Image.Image | np.ndarray | Picture


def _is_16bit(im: Image.Image) -> bool:
    """Pillow reads 16-bit RGB(A) PNGs as 8-bit modes; only the (not yet loaded) tile tells."""
    return any(";16" in str(t.args) for t in getattr(im, "tile", None) or [])


def _from_pil(im: Image.Image, deep: bool = False) -> Picture:
    im = ImageOps.exif_transpose(im)
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
    if arr.dtype == np.uint16:
        warnings.warn("16-bit array reduced to 8 bits per channel", stacklevel=3)
        arr = ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if arr.dtype != np.uint8:
        raise ImageError(f"arrays must be uint8 (or uint16), got {arr.dtype}")
    if arr.ndim == 2:
        return Picture(np.repeat(arr[:, :, None], 3, axis=2), "L")
    if arr.ndim == 3 and arr.shape[2] == 3:
        return Picture(np.ascontiguousarray(arr), "RGB")
    if arr.ndim == 3 and arr.shape[2] == 4:
        return Picture(np.ascontiguousarray(arr[:, :, :3]), "RGBA", arr[:, :, 3].copy())
    raise ImageError(f"arrays must be HxW, HxWx3 or HxWx4, got shape {arr.shape}")


def load(source: ImageInput) -> Picture:
    """Read a path, PIL image or uint8 numpy array. Raises ImageError with a one-line reason."""
    if isinstance(source, Picture):
        return source
    if isinstance(source, np.ndarray):
        pic = _from_array(source)
    elif isinstance(source, Image.Image):
        pic = _from_pil(source, _is_16bit(source))
    else:
        path = Path(source)
        try:
            with Image.open(path) as im:
                deep = _is_16bit(im)
                im.load()
                pic = _from_pil(im, deep)
        except FileNotFoundError:
            raise ImageError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise ImageError(f"{path}: is a directory") from None
        except UnidentifiedImageError:
            raise ImageError(f"{path}: not an image Pillow can read") from None
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageError(f"{path}: cannot read image ({exc})") from None
    if pic.rgb.shape[0] < 1 or pic.rgb.shape[1] < 1:
        raise ImageError("image has no pixels")
    return pic


def to_pil(pic: Picture) -> Image.Image:
    """The decoded picture as a PIL image in its original colour mode."""
    if pic.mode in ("L", "LA"):
        grey = np.round(pic.rgb.astype(np.float32).mean(axis=2)).astype(np.uint8)
        planes = [grey] if pic.mode == "L" else [grey, pic.alpha]
    else:
        planes = [pic.rgb[:, :, c] for c in range(3)] + ([pic.alpha] if pic.mode == "RGBA" else [])
    arr = np.stack(planes, axis=2) if len(planes) > 1 else planes[0]
    return Image.fromarray(np.ascontiguousarray(arr), pic.mode)


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


def save(img: Image.Image, path: Path, force: bool = False) -> None:
    """Write atomically (temporary file in the same folder, then rename); refuse to overwrite
    an existing file unless ``force``. Alpha is never dropped: formats without it are refused."""
    fmt = output_format(path)
    if img.mode in ("RGBA", "LA") and fmt in ("JPEG", "BMP", "PPM"):
        raise OutputError(f"{path}: {fmt} cannot store the image's alpha channel; use .png or .webp")
    # lossless WebP keeps the colour under transparent pixels only with exact=True
    options = {"lossless": True, "exact": True} if fmt == "WEBP" else {"quality": 95} if fmt == "JPEG" else {}
    write_atomic(path, lambda f: img.save(f, format=fmt, **options), force)
