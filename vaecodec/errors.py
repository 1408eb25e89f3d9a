"""Exceptions that vaecodec raises for problems with its inputs (not bugs).

The CLI prints these as one line and exits non-zero; the Python API lets them propagate. They all
derive from :class:`VaecodecError`, so ``except vaecodec.VaecodecError`` catches every user-facing
failure and nothing else.
"""


class VaecodecError(Exception):
    """Base class of every error caused by input files, images or options."""


class ImageError(VaecodecError):
    """The input image cannot be read or represented (unknown format, bad array shape, too large)."""


class CorruptFileError(VaecodecError):
    """A .vaez file is damaged, truncated or not a .vaez file at all."""


class UnsupportedFileError(VaecodecError):
    """A well-formed .vaez file this version cannot decode (newer format, model not shipped)."""


class LimitError(VaecodecError):
    """An image, or a file's declared image, is larger than the pixel limit allows, or coding it ran
    out of memory. Limits protect a service from inputs whose size is out of proportion."""


class OutputError(VaecodecError):
    """An output cannot be written as asked (exists without --force, format cannot hold alpha)."""
