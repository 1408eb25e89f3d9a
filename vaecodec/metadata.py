"""An image's metadata: the ICC colour profile, EXIF and XMP, kept from the input to the decoded output.

A photo's ICC profile says what its RGB numbers mean (a Display P3 phone photo shown as sRGB looks
dull and wrong), and its EXIF and XMP carry what people keep photos for: the camera, the date, the
place, the rights. So they are kept by default, as cjxl and avifenc keep them, and dropped only when
asked (``strip``).

In a .vaez file they are one optional section (docs/format.md): a byte that says how the rest is
stored (0 as is, 1 zlib-deflated, whichever is shorter), then items ``tag, varint length, bytes``
with tags 1 (ICC), 2 (EXIF, a TIFF structure starting with its byte-order mark), 3 (XMP packet).
A reader skips a tag it does not know, so later versions can add items that older readers ignore.

The EXIF orientation is applied to the pixels before coding (:mod:`vaecodec.image`), so the EXIF
that is kept no longer carries one: a viewer would otherwise rotate the decoded image twice.
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass

from PIL import Image, PngImagePlugin

from .bits import BitReader, BitWriter
from .errors import CorruptFileError

ICC, EXIF, XMP = 1, 2, 3
RAW, DEFLATE = 0, 1
MAX_BYTES = 1 << 26  # an inflated section larger than this is refused (a zlib bomb, not metadata)
_VARINT_BYTES = 5
_EXIF_HEADER = b"Exif\x00\x00"  # JPEG's APP1 prefix, which Pillow keeps in some formats and not others


@dataclass(frozen=True)
class Metadata:
    """ICC profile, EXIF (a TIFF structure, without JPEG's ``Exif\\0\\0`` prefix) and XMP, each
    None when absent."""

    icc: bytes | None = None
    exif: bytes | None = None
    xmp: bytes | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.icc, self.exif, self.xmp))

    def items(self) -> list[tuple[int, bytes]]:
        return [(tag, v) for tag, v in ((ICC, self.icc), (EXIF, self.exif), (XMP, self.xmp)) if v is not None]


def from_pil(im: Image.Image) -> Metadata:
    """The metadata of an image as Pillow read it, after ``ImageOps.exif_transpose`` (which takes the
    orientation out of its EXIF)."""
    icc = im.info.get("icc_profile") or None
    exif = im.getexif()
    exif.pop(0x0112, None)  # the orientation: applied to the pixels already
    exif_bytes = exif.tobytes() if len(exif) else None
    xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
    if isinstance(xmp, str):
        xmp = xmp.encode()
    return Metadata(icc, _without_prefix(exif_bytes), xmp or None)


def _without_prefix(exif: bytes | None) -> bytes | None:
    return exif[len(_EXIF_HEADER) :] if exif and exif.startswith(_EXIF_HEADER) else exif


def encode(md: Metadata) -> bytes:
    """The file section of some metadata (empty when there is none)."""
    if not md:
        return b""
    body = b"".join(_item(tag, value) for tag, value in md.items())
    packed = zlib.compress(body, 9)
    return bytes([DEFLATE]) + packed if len(packed) < len(body) else bytes([RAW]) + body


def _item(tag: int, value: bytes) -> bytes:
    head = BitWriter()
    head.varint(tag)
    head.varint(len(value))
    return head.getvalue() + value


def decode(data: bytes) -> Metadata:
    """Parse a metadata section; CorruptFileError for anything malformed."""
    if not data:
        return Metadata()
    if data[0] == DEFLATE:
        inflater = zlib.decompressobj()
        try:
            body = inflater.decompress(data[1:], MAX_BYTES)
        except zlib.error:
            raise CorruptFileError("metadata section is damaged (bad deflate stream)") from None
        if inflater.unconsumed_tail or not inflater.eof or inflater.unused_data:
            raise CorruptFileError("metadata section is damaged or too large")
    elif data[0] == RAW:
        body = data[1:]
    else:
        raise CorruptFileError(f"metadata section has an unknown storage {data[0]}")
    reader = BitReader(body, "metadata section")
    found: dict[int, bytes] = {}
    while reader.byte_pos < len(body):
        tag = reader.varint(_VARINT_BYTES)
        size = reader.varint(_VARINT_BYTES)
        start = reader.byte_pos
        if start + size > len(body):
            raise CorruptFileError("metadata section is truncated")
        if tag in found:
            raise CorruptFileError(f"metadata section holds item {tag} twice")
        found[tag] = body[start : start + size]
        reader.pos += 8 * size
    return Metadata(found.get(ICC), found.get(EXIF), found.get(XMP))


def attach(im: Image.Image, md: Metadata) -> Image.Image:
    """Put metadata into a decoded image's ``info``, where Pillow users look for it."""
    if md.icc is not None:
        im.info["icc_profile"] = md.icc
    if md.exif is not None:
        im.info["exif"] = _EXIF_HEADER + md.exif
    if md.xmp is not None:
        im.info["xmp"] = md.xmp
    return im


# What each output format can carry, and how Pillow is told to write it.
_CARRIES = {
    "PNG": (ICC, EXIF, XMP), "JPEG": (ICC, EXIF, XMP), "WEBP": (ICC, EXIF, XMP), "AVIF": (ICC, EXIF, XMP),
    "TIFF": (ICC, EXIF), "JPEG2000": (), "BMP": (), "PPM": (), "GIF": (), "TGA": (), "QOI": (),
}
_NAMES = {ICC: "the ICC profile", EXIF: "the EXIF", XMP: "the XMP"}


def save_options(im: Image.Image, fmt: str) -> dict:
    """Pillow save options that write an image's metadata (from its ``info``) in format ``fmt``; a
    warning for each piece the format cannot carry."""
    md = Metadata(im.info.get("icc_profile"), _without_prefix(im.info.get("exif")), im.info.get("xmp"))
    carries = _CARRIES.get(fmt, ())
    lost = [_NAMES[tag] for tag, _ in md.items() if tag not in carries]
    if lost:
        warnings.warn(f"{fmt} cannot carry {' and '.join(lost)}; written without", stacklevel=3)
    options: dict = {}
    if md.icc is not None and ICC in carries:
        options["icc_profile"] = md.icc
    if md.exif is not None and EXIF in carries:
        options["exif"] = _EXIF_HEADER + md.exif  # the form Pillow's writers all take
    if md.xmp is not None and XMP in carries:
        if fmt == "PNG":
            info = PngImagePlugin.PngInfo()
            info.add_itxt("XML:com.adobe.xmp", md.xmp.decode("utf-8", "replace"))
            options["pnginfo"] = info
        else:
            options["xmp"] = md.xmp
    return options
