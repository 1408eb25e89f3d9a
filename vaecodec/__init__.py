"""vaecodec: a learned image codec (mean-scale hyperprior VAE, ANS-coded, bit-exact across devices).

Python API::

    import vaecodec
    data = vaecodec.compress("photo.png", quality=5)      # bytes of a .vaez file
    img = vaecodec.decompress(data)                       # PIL image

    codec = vaecodec.Codec(device="cuda")                 # load once, code many
    files = codec.compress_batch(["a.png", "b.png"], quality=5)

Importing the package is cheap: torch and the networks load on first use of :class:`Codec` or of
the module-level functions (:pep:`562` lazy attributes), so the command line answers ``--help``,
``--version``, ``info`` and ``models`` without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import CorruptFileError, ImageError, LimitError, OutputError, UnsupportedFileError, VaecodecError
from .quality import DEFAULT_EFFORT, DEFAULT_QUALITY, EFFORT_MAX, QUALITY_MAX, QUALITY_MIN

if TYPE_CHECKING:
    from .api import compress, decompress
    from .codec import Codec

__version__ = "0.2.0.dev0"

__all__ = [
    "Codec", "CorruptFileError", "DEFAULT_EFFORT", "DEFAULT_QUALITY", "EFFORT_MAX", "ImageError",
    "LimitError", "OutputError", "QUALITY_MAX", "QUALITY_MIN", "UnsupportedFileError", "VaecodecError",
    "compress", "decompress", "__version__",
]

_LAZY = {"Codec": "codec", "compress": "api", "decompress": "api"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
