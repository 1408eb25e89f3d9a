"""The .vaez container: a small header, the coded streams, and a CRC32 over everything.

Layout (all multi-byte integers little-endian; ``varint`` is unsigned LEB128); see docs/format.md:

====== ======= ====================================================================
offset size    field
====== ======= ====================================================================
0      4       magic ``b"VAEZ"``
4      1       format version (this module writes FORMAT_VERSION)
5      8       model id: first 8 bytes of the SHA-256 of the model's tensors
13     1       colour mode: 0 RGB, 1 L (grey), 2 RGBA, 3 LA; plus 128 when a metadata section follows
14     2       quality x 100 (uint16), e.g. 350 for quality 3.5
16     varint  width in pixels (>= 1)
.      varint  height in pixels (>= 1)
.      varint  length of the ANS stream in bytes (multiple of 4)
.      varint  length of the escape stream in bytes
.      varint  length of the alpha stream in bytes (0 unless the mode has alpha)
.      varint  length of the filter section in bytes (0: no filter)
.      varint  length of the metadata section in bytes (only when the mode byte says there is one)
.      4       CRC32 of the decoded latent symbols (z then y, int32 little-endian), checked after decoding
.      4       CRC32 of every byte before it and of the payload that follows
.      ...     payload: ANS stream, escape stream, alpha stream (a PNG of the alpha plane), filter
              section (the per-image Wiener filter, vaecodec.wiener), metadata section (ICC, EXIF,
              XMP: vaecodec.metadata)
====== ======= ====================================================================

Parsing checks, in order: magic, version, field ranges, that the file is exactly as long as the
header says (truncation / trailing bytes), then the CRC. Only then is the model looked up, so a
damaged model id reads as corruption, while an intact file from another model says which model it
needs.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .bits import BitReader, BitWriter
from .errors import CorruptFileError, UnsupportedFileError
from .quality import QUALITY_MAX, QUALITY_MIN

MAGIC = b"VAEZ"
FORMAT_VERSION = 3
MODES = ("RGB", "L", "RGBA", "LA")
MAX_SIDE = 65535
MAX_PIXELS = 1 << 26  # 67 MP: bounds the memory a (possibly hostile) file can make the decoder use
_FIXED = struct.Struct("<4sB8sBH")
_VARINT_BYTES = 5  # 35 bits is plenty for any field; longer means corruption
HAS_METADATA = 0x80  # in the mode byte; a file without metadata is laid out as if the flag did not exist


@dataclass(frozen=True)
class Header:
    model_id: bytes
    mode: str
    quality: float
    width: int
    height: int


@dataclass(frozen=True)
class Payload:
    stream: bytes
    escapes: bytes
    alpha: bytes
    filter: bytes = b""  # the Wiener filter section, empty when the encoder sent none
    metadata: bytes = b""  # the metadata section, empty when the image has none (or it was stripped)
    checksum: int = 0  # CRC32 of the latent symbols the streams decode to (vaecodec.latent_codec)


def check_size(width: int, height: int) -> None:
    """Refuse dimensions outside what the format and the decoder's memory bound allow."""
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise CorruptFileError(f"image size {width}x{height} is outside 1..{MAX_SIDE} per side")
    if width * height > MAX_PIXELS:
        raise CorruptFileError(f"image of {width}x{height} pixels exceeds the {MAX_PIXELS} pixel limit")


def pack(header: Header, payload: Payload) -> bytes:
    quality = round(header.quality * 100)
    if not 0 <= quality <= 0xFFFF:
        raise ValueError(f"quality {header.quality} cannot be stored")
    mode = MODES.index(header.mode) | (HAS_METADATA if payload.metadata else 0)
    head = _FIXED.pack(MAGIC, FORMAT_VERSION, header.model_id, mode, quality)
    fields = BitWriter()
    lengths = [len(payload.stream), len(payload.escapes), len(payload.alpha), len(payload.filter)]
    for v in (header.width, header.height, *lengths, *([len(payload.metadata)] if payload.metadata else [])):
        fields.varint(v)
    head += fields.getvalue() + struct.pack("<I", payload.checksum)
    body = payload.stream + payload.escapes + payload.alpha + payload.filter + payload.metadata
    crc = zlib.crc32(body, zlib.crc32(head))
    return head + struct.pack("<I", crc) + body


def unpack(data: bytes) -> tuple[Header, Payload]:
    """Parse and verify a .vaez file; raises CorruptFileError / UnsupportedFileError."""
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise CorruptFileError("not a .vaez file (bad magic bytes)")
    if len(data) < _FIXED.size:
        raise CorruptFileError("file is truncated inside the header")
    _, version, model_id, mode, quality = _FIXED.unpack_from(data)
    if version != FORMAT_VERSION:
        made = "a newer vaecodec" if version > FORMAT_VERSION else "a pre-release vaecodec"
        raise UnsupportedFileError(f"format version {version} comes from {made}; this version reads "
                                   f"format {FORMAT_VERSION}")
    has_metadata, mode = mode & HAS_METADATA, mode & ~HAS_METADATA
    if mode >= len(MODES):
        raise CorruptFileError(f"unknown colour mode {mode}")
    if not QUALITY_MIN <= quality / 100 <= QUALITY_MAX:
        raise CorruptFileError(f"quality {quality / 100:g} is outside {QUALITY_MIN:g}..{QUALITY_MAX:g}")
    reader = BitReader(data, "the header", 8 * _FIXED.size)
    width, height, n_stream, n_esc, n_alpha, n_filter = (reader.varint(_VARINT_BYTES) for _ in range(6))
    n_meta = reader.varint(_VARINT_BYTES) if has_metadata else 0
    if has_metadata and not n_meta:
        raise CorruptFileError("metadata flag set without a metadata section")
    pos = reader.byte_pos + 4
    if len(data) < pos:
        raise CorruptFileError("file is truncated inside the header")
    (checksum,) = struct.unpack_from("<I", data, pos - 4)
    check_size(width, height)
    if (n_alpha > 0) != (MODES[mode] in ("RGBA", "LA")):
        raise CorruptFileError("alpha stream does not match the colour mode")
    end = pos + 4 + n_stream + n_esc + n_alpha + n_filter + n_meta
    if len(data) < end:
        raise CorruptFileError(f"file is truncated ({len(data)} of {end} bytes)")
    if len(data) > end:
        raise CorruptFileError(f"file has {len(data) - end} unexpected trailing bytes")
    (crc,) = struct.unpack_from("<I", data, pos)
    body = data[pos + 4 :]
    if zlib.crc32(body, zlib.crc32(data[:pos])) != crc:
        raise CorruptFileError("checksum mismatch: the file is damaged")
    header = Header(model_id, MODES[mode], quality / 100, width, height)
    a, b = n_stream + n_esc, n_stream + n_esc + n_alpha
    c = b + n_filter
    payload = Payload(body[:n_stream], body[n_stream:a], body[a:b], body[b:c], body[c:], checksum)
    return header, payload
