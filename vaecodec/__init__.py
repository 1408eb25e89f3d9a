"""vaecodec: a learned image codec (mean-scale hyperprior VAE, ANS-coded, bit-exact across devices).

Python API::

    import vaecodec
    data = vaecodec.compress("photo.png", quality=5)      # bytes of a .vaez file
    data = vaecodec.compress("photo.png", effort=2)       # slower encode, smaller file
    img = vaecodec.decompress(data)                       # PIL image

    codec = vaecodec.Codec(device="cuda")                 # load once, code many
    files = codec.compress_batch(paths, quality=5)
"""

from __future__ import annotations

from functools import lru_cache

from PIL import Image

from .codec import DEFAULT_EFFORT, DEFAULT_QUALITY, QUALITY_MAX, QUALITY_MIN, Codec, FileInput
from .errors import CorruptFileError, ImageError, OutputError, UnsupportedFileError, VaecodecError
from .image import ImageInput

__version__ = "0.1.0"

__all__ = [
    "Codec", "CorruptFileError", "DEFAULT_EFFORT", "DEFAULT_QUALITY", "ImageError", "OutputError",
    "QUALITY_MAX", "QUALITY_MIN", "UnsupportedFileError", "VaecodecError", "compress", "decompress",
    "__version__",
]


@lru_cache(maxsize=1)
def _default_codec() -> Codec:
    return Codec()


def compress(img: ImageInput, quality: float = DEFAULT_QUALITY, effort: int = DEFAULT_EFFORT,
             wiener: bool = True) -> bytes:
    """Compress one image with the shipped default model (loaded once per process); ``effort`` 0..2
    trades encoding time for smaller files (see :mod:`vaecodec.refine`), ``wiener=False`` skips the
    per-image filter (faster, larger files; see :mod:`vaecodec.wiener`)."""
    return _default_codec().compress(img, quality, effort, wiener)


def decompress(data: FileInput) -> Image.Image:
    """Decompress .vaez bytes or a .vaez path with the shipped models."""
    return _default_codec().decompress(data)
