"""Module-level ``vaecodec.compress`` / ``vaecodec.decompress``: one shared :class:`Codec` with the
shipped model, loaded on first use and kept for the process."""

from __future__ import annotations

from functools import lru_cache

from PIL import Image

from .codec import Codec
from .files import FileInput
from .image import ImageInput
from .quality import DEFAULT_EFFORT, DEFAULT_QUALITY


@lru_cache(maxsize=1)
def _default_codec() -> Codec:
    return Codec()


def compress(img: ImageInput, quality: float = DEFAULT_QUALITY, effort: int = DEFAULT_EFFORT,
             wiener: bool = True) -> bytes:
    """Compress one image with the shipped model (see :meth:`Codec.compress`)."""
    return _default_codec().compress(img, quality, effort, wiener)


def decompress(data: FileInput) -> Image.Image:
    """Decompress .vaez bytes or a .vaez path with the shipped model."""
    return _default_codec().decompress(data)
