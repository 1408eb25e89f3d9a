"""ICC profile, EXIF and XMP are kept: stored in the .vaez and written back on decode."""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np
import pytest
from PIL import Image, ImageCms

from vaecodec import CorruptFileError, container, image, metadata

XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="A. Photographer"/>'
       b"</rdf:RDF></x:xmpmeta>")


def display_p3_profile() -> bytes:
    """A minimal ICC v2 display profile with the Display P3 primaries (D50-adapted) and gamma 2.2,
    built here so the test holds a real wide-gamut profile that is not sRGB."""
    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + bytes(4) + s15(x) + s15(y) + s15(z)

    def curv(gamma: float) -> bytes:
        return b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)

    name = b"Display P3 (test)\0"
    tags = [(b"desc", b"desc" + bytes(4) + struct.pack(">I", len(name)) + name + bytes(78)),
            (b"cprt", b"text" + bytes(4) + b"none\0"), (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
            (b"rXYZ", xyz(0.5151, 0.2412, -0.0011)), (b"gXYZ", xyz(0.2920, 0.6922, 0.0419)),
            (b"bXYZ", xyz(0.1571, 0.0666, 0.7841)), (b"rTRC", curv(2.2)), (b"gTRC", curv(2.2)),
            (b"bTRC", curv(2.2))]
    offset, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for sig, body in tags:
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body + bytes(-len(body) % 4)
    size = offset + len(data)
    head = (struct.pack(">I", size) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ " + bytes(12) + b"acsp"
            + b"APPL" + bytes(24) + s15(0.9642) + s15(1.0) + s15(0.8249))
    return head + bytes(128 - len(head)) + struct.pack(">I", len(tags)) + table + data


def camera_exif(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "Canon"  # Make
    exif[0x0132] = "2026:12:06 10:11:12"  # DateTime
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.5), 3: "E", 4: (13.0, 24.0, 0.0)}  # GPS
    if orientation is not None:
        exif[0x0112] = orientation
    return exif


@pytest.fixture(scope="module")
def p3_png(make_image) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(make_image(48, 64, seed=2)).save(buf, "PNG", icc_profile=display_p3_profile(),
                                                      exif=camera_exif().tobytes())
    return buf.getvalue()


def _assert_camera_exif(exif: Image.Exif) -> None:
    assert exif[0x010F] == "Canon" and exif[0x0132] == "2026:12:06 10:11:12"
    gps = exif.get_ifd(0x8825)
    assert gps[2] == (52.0, 31.0, 12.5) and gps[1] == "N"


def test_the_built_profile_is_a_real_display_p3_profile():
    profile = ImageCms.ImageCmsProfile(io.BytesIO(display_p3_profile()))
    assert ImageCms.getProfileDescription(profile).strip() == "Display P3 (test)"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_icc_and_exif_round_trip_to_every_output(codec, p3_png, fmt):
    out = codec.decompress(codec.compress(p3_png, 6))
    assert out.info["icc_profile"] == display_p3_profile()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # JPEG's lossy re-encode warning
        written = Image.open(io.BytesIO(image.encode(out, fmt)))
    assert written.info["icc_profile"] == display_p3_profile()
    _assert_camera_exif(written.getexif())


def test_xmp_and_an_srgb_profile_round_trip(codec, make_image, tmp_path):
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = tmp_path / "x.jpg"
    Image.fromarray(make_image(32, 40)).save(path, icc_profile=srgb, xmp=XMP)
    out = codec.decompress(codec.compress(path, 6))
    assert out.info["icc_profile"] == srgb and out.info["xmp"] == XMP
    saved = tmp_path / "y.png"
    image.save(out, saved)
    back = Image.open(saved)
    assert back.info["icc_profile"] == srgb and XMP in back.info["xmp"]


def test_orientation_is_applied_and_reset(codec, make_image):
    """EXIF orientation 6 (rotate 90 degrees) turns the pixels; the kept EXIF has no orientation,
    so a viewer does not turn the decoded image a second time."""
    buf = io.BytesIO()
    Image.fromarray(make_image(32, 48)).save(buf, "PNG", exif=camera_exif(orientation=6).tobytes())
    out = codec.decompress(codec.compress(buf.getvalue(), 6))
    assert out.size == (32, 48)  # width and height swapped
    exif = out.getexif()
    assert 0x0112 not in exif
    _assert_camera_exif(exif)


def test_strip_drops_everything_and_no_metadata_adds_nothing(codec, p3_png, make_image):
    stripped = codec.compress(p3_png, 6, strip=True)
    assert container.unpack(stripped)[1].metadata == b""
    out = codec.decompress(stripped)
    assert not {"icc_profile", "exif", "xmp"} & set(out.info)
    kept = codec.compress(p3_png, 6)
    assert len(kept) > len(stripped)
    plain = codec.compress(make_image(48, 64, seed=2), 6)
    assert container.unpack(plain)[1].metadata == b"" and plain[13] < container.HAS_METADATA


def test_formats_that_cannot_carry_metadata_say_so(codec, p3_png):
    out = codec.decompress(codec.compress(p3_png, 6))
    with pytest.warns(UserWarning, match="BMP cannot carry the ICC profile and the EXIF"):
        image.encode(out, "BMP")


def test_section_round_trip_and_unknown_items_are_skipped():
    md = metadata.Metadata(icc=b"\x01" * 300, exif=b"MM\x00*" + bytes(40), xmp=XMP)
    assert metadata.decode(metadata.encode(md)) == md
    assert metadata.encode(metadata.Metadata()) == b""
    future = bytes([metadata.RAW, 9, 2]) + b"hi" + bytes([metadata.XMP, 3]) + b"abc"
    assert metadata.decode(future) == metadata.Metadata(xmp=b"abc")


@pytest.mark.parametrize("data", [
    bytes([7]) + b"x",  # unknown storage
    bytes([metadata.RAW, metadata.ICC, 10]) + b"short",  # truncated item
    bytes([metadata.RAW, metadata.ICC, 1]) + b"a" + bytes([metadata.ICC, 1]) + b"b",  # twice
    bytes([metadata.DEFLATE]) + b"not deflate",
], ids=["storage", "truncated", "twice", "deflate"])
def test_damaged_sections_are_refused(data):
    with pytest.raises(CorruptFileError, match="metadata"):
        metadata.decode(data)


def test_a_deflate_bomb_is_refused():
    import zlib

    bomb = bytes([metadata.DEFLATE]) + zlib.compress(bytes([metadata.ICC, 0x80, 0x80, 0x80, 0x40])
                                                     + bytes(metadata.MAX_BYTES + 10), 9)
    with pytest.raises(CorruptFileError, match="too large"):
        metadata.decode(bomb)


def test_a_damaged_section_in_a_file_is_refused(codec, p3_png):
    header, payload = container.unpack(codec.compress(p3_png, 6))
    bad = container.pack(header, container.Payload(payload.stream, payload.escapes, payload.alpha,
                                                   payload.filter, bytes([metadata.RAW, 1, 50]) + b"x"))
    with pytest.raises(CorruptFileError, match="metadata"):
        codec.decompress(bad)
    flagged = bytearray(codec.compress(np.zeros((8, 8, 3), np.uint8), 5))
    flagged[13] |= container.HAS_METADATA  # the flag without the length field: the header is wrong
    with pytest.raises(CorruptFileError):
        container.unpack(bytes(flagged))
