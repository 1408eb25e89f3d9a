"""A Pillow plugin for .vaez files: ``Image.open("photo.vaez")`` and ``img.save("photo.vaez", quality=5)``.

Pillow has no discovery of third-party plugins (no entry-point group: it loads only the plugins it
ships, listed in ``PIL._plugins``), so, as with pillow-avif-plugin or pillow-jxl-plugin, the format is
registered by importing this module::

    import vaecodec.pillow  # noqa: F401  (registers the VAEZ format with Pillow)
    from PIL import Image

    img = Image.open("photo.vaez")        # reads the header only: size, mode, ICC/EXIF/XMP in info
    img.load()                            # decodes (the networks run here, on first access to pixels)
    img.save("photo.png")
    Image.open("photo.png").save("copy.vaez", quality=5)

Opening is cheap: ``Image.open`` reads the file, checks the container (magic, version, fields, length,
checksum) and parses the metadata section, all without torch, so ``size``, ``mode`` and
``info["icc_profile"]`` (also ``"exif"``, ``"xmp"``) are there before anything is decoded; the parsed
header is ``img.vaez_header`` (:class:`vaecodec.container.Header`: quality, model id). Pixels are
decoded on ``load()`` (which Pillow calls on first use of them) by the shared codec of
:mod:`vaecodec.api`, the shipped model on CUDA when there is one. A file made by a model this
vaecodec does not ship opens, and fails on ``load()``.

Saving takes vaecodec's options as Pillow save parameters: ``quality`` (vaecodec's scale, 1..10, not
JPEG's 0..100; default 7), or one of ``target_bpp``, ``target_size`` (bytes), ``target_psnr`` (dB);
``effort`` (0..2), ``wiener`` (default True) and ``strip`` (drop the metadata). The image's ICC
profile, EXIF and XMP are kept, as from any PIL image given to :meth:`vaecodec.Codec.compress`;
as with Pillow's own writers, ``icc_profile=``, ``exif=`` and ``xmp=`` given to ``save`` replace the
image's own (``None`` or empty: leave it out).

Errors: a file that does not start with the .vaez magic bytes is not claimed (Pillow goes on to its
other formats, and says ``UnidentifiedImageError`` if none reads it). Any vaecodec error (a damaged
or truncated file, a newer format, a model not shipped, a bad save option) is raised as
:class:`VaezError`, which is an ``OSError`` (what Pillow raises for files it cannot read or write)
and a :class:`vaecodec.VaecodecError`, with vaecodec's one-line message and the original error as
its ``__cause__``.
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any

from PIL import Image, ImageFile

from . import container, metadata
from .errors import VaecodecError

if TYPE_CHECKING:
    from .codec import Codec

FORMAT = "VAEZ"
EXTENSION = ".vaez"
MIME = "image/x-vaez"
# Save parameters passed to Codec.compress as they are.
SAVE_OPTIONS = ("quality", "effort", "wiener", "strip", "target_bpp", "target_size", "target_psnr")
_METADATA_KEYS = ("icc_profile", "exif", "xmp")


class VaezError(OSError, VaecodecError):
    """A .vaez file Pillow cannot open, decode or write: an ``OSError`` (Pillow's convention) and a
    :class:`vaecodec.VaecodecError`; ``__cause__`` is the specific vaecodec error."""


def _codec() -> Codec:
    """The shared codec of the module-level API (imported here: it loads torch and the model)."""
    from .api import _default_codec

    return _default_codec()


def _accept(prefix: bytes) -> bool:
    return prefix[: len(container.MAGIC)] == container.MAGIC


class VaezImageFile(ImageFile.ImageFile):
    """A .vaez file opened by Pillow: the header and metadata at open, the pixels on ``load()``."""

    format = FORMAT
    format_description = "vaecodec learned image codec"
    _data: bytes | None = None  # the file, from _open until load() has decoded it

    def _open(self) -> None:
        assert self.fp is not None
        data = self.fp.read()
        if not _accept(data):
            raise SyntaxError("not a .vaez file")
        try:
            header, payload = container.unpack(data)
            md = metadata.decode(payload.metadata)
        except VaecodecError as exc:
            raise VaezError(str(exc)) from exc
        self._data = data
        self.vaez_header = header
        self._mode = header.mode
        self._size = (header.width, header.height)
        metadata.attach(self, md)

    def load(self) -> Image.core.PixelAccess | None:
        if self._im is None and self._data is not None:
            try:
                dec = _codec().decompress(self._data)
            except VaecodecError as exc:
                raise VaezError(str(exc)) from exc
            if dec.mode != self.mode or dec.size != self.size:  # the codec decodes what the header says
                raise VaezError(f"decoded a {dec.mode} {dec.size} image for a {self.mode} {self.size} file")
            self.im = dec.im
            self.info.update(dec.info)
            self.readonly = 0
            self._data = None
            if self._exclusive_fp and self._close_exclusive_fp_after_loading and self.fp:
                self.fp.close()
            self.fp = None
        return Image.Image.load(self)


def _source(im: Image.Image) -> Image.Image:
    """The image the codec reads: ``im``, or a copy whose ``info`` holds the metadata given as save
    parameters in place of the image's own."""
    given = {k: im.encoderinfo[k] for k in _METADATA_KEYS if k in im.encoderinfo}
    if not given:
        return im
    src = im.copy()  # copy() does not carry EXIF edited through getexif(): take it from the original
    exif = given.pop("exif") if "exif" in given else im.getexif()
    if isinstance(exif, Image.Exif):
        exif = exif.tobytes() if len(exif) else None
    given["exif"] = exif
    for key, value in given.items():
        if key == "xmp":
            src.info.pop("XML:com.adobe.xmp", None)  # where PNG keeps it; it would stand in for xmp
        if value:
            src.info[key] = value
        else:
            src.info.pop(key, None)
    return src


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    options: dict[str, Any] = {k: im.encoderinfo[k] for k in SAVE_OPTIONS if k in im.encoderinfo}
    try:
        data = _codec().compress(_source(im), **options)
    except VaecodecError as exc:
        raise VaezError(str(exc)) from exc
    fp.write(data)


Image.register_open(FORMAT, VaezImageFile, _accept)
Image.register_save(FORMAT, _save)
Image.register_extension(FORMAT, EXTENSION)
Image.register_mime(FORMAT, MIME)
