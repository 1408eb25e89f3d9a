"""Image I/O: input conversion (bit depth, EXIF, odd modes), input errors and safe output writing."""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib

import numpy as np
import pytest
from conftest import PSNR_FLOOR, psnr
from PIL import Image

from vaecodec import ImageError, OutputError, image


def test_16bit_grayscale_png(codec, tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 40), (24, 1)).astype(np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    with pytest.warns(UserWarning, match="16-bit"):
        data = codec.compress(path, 8)
    out = codec.decompress(data)
    assert out.mode == "L"
    assert out.size == (40, 24)
    assert psnr(out, np.round(ramp / 257.0)) > PSNR_FLOOR


def _png_rgb16(width: int, height: int) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one itself)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    px = np.zeros((height, width, 3), ">u2")
    px[..., 0] = np.linspace(0, 65535, width)[None, :]
    px[..., 1] = 0x8080
    raw = b"".join(b"\0" + px[r].tobytes() for r in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def test_16bit_rgb_png_warns(tmp_path):
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png_rgb16(12, 8))
    with pytest.warns(UserWarning, match="16-bit"):
        pic = image.load(path)
    assert pic.mode == "RGB"


def test_16bit_rgb_png_loads(tmp_path):
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png_rgb16(12, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pic = image.load(path)
    assert pic.mode == "RGB" and pic.size == (12, 8)
    assert np.all(np.abs(pic.rgb[..., 1].astype(int) - 0x80) <= 1)


def test_uint16_array_warns_and_scales():
    arr = np.array([[0, 257, 65535], [128, 32896, 65535]], np.uint16)
    with pytest.warns(UserWarning, match="16-bit"):
        pic = image.load(arr)
    assert pic.mode == "L"
    assert pic.rgb[..., 0].tolist() == [[0, 1, 255], [0, 128, 255]]


def test_cmyk_converted_with_warning():
    im = Image.new("CMYK", (5, 4), (0, 255, 0, 0))
    with pytest.warns(UserWarning, match="CMYK"):
        pic = image.load(im)
    assert pic.mode == "RGB" and pic.size == (5, 4)
    assert pic.rgb[0, 0].tolist() == [255, 0, 255]


def test_bilevel_becomes_grey():
    im = Image.fromarray(np.eye(6, dtype=bool))
    assert im.mode == "1"
    pic = image.load(im)
    assert pic.mode == "L"
    assert pic.rgb[0, 0].tolist() == [255] * 3 and pic.rgb[0, 1].tolist() == [0] * 3


def test_plain_rgb_png_does_not_warn(tmp_path, make_image):
    path = tmp_path / "rgb8.png"
    Image.fromarray(make_image(8, 8)).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pic = image.load(path)
    assert np.array_equal(pic.rgb, make_image(8, 8))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_applied(codec, tmp_path, fmt):
    arr = np.zeros((16, 48, 3), np.uint8)
    arr[:, :24] = 255  # left half white
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / f"rot.{fmt.lower()}"
    im.save(path, format=fmt, exif=exif.tobytes())
    pic = image.load(path)
    assert pic.size == (16, 48)
    out = np.asarray(codec.decompress(codec.compress(path, 8)).convert("L"), dtype=np.float64)
    assert out.shape == (48, 16)
    assert out[:24].mean() > out[24:].mean() + 100  # the white half is now on top


def test_non_image_file(tmp_path):
    path = tmp_path / "x.png"
    path.write_text("this is not a picture\n")
    with pytest.raises(ImageError, match="x.png"):
        image.load(path)


def test_truncated_png(tmp_path, make_image):
    buf = io.BytesIO()
    Image.fromarray(make_image(32, 32)).save(buf, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match="cut.png"):
        image.load(path)


def test_missing_file_and_directory(codec, tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        image.load(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="no such file"):
        codec.compress(str(tmp_path / "missing.png"))
    with pytest.raises(ImageError, match="directory"):
        image.load(tmp_path)


@pytest.mark.parametrize(
    "arr",
    [np.full((4, 4, 3), 1.5, np.float32), np.full((4, 4, 3), np.nan, np.float32),
     np.zeros((4, 4), np.int64), np.zeros((4, 4), bool), np.zeros((4, 4, 2), np.uint8),
     np.zeros((2, 4, 5), np.uint8), np.zeros(16, np.uint8), np.zeros((2, 4, 4, 3), np.uint8),
     np.zeros((0, 5), np.uint8), np.zeros((5, 0, 3), np.uint8)],
    ids=["float-above-1", "float-nan", "int64", "bool", "2ch", "5ch", "1d", "4d", "no-rows", "no-cols"],
)
def test_bad_arrays(codec, arr):
    with pytest.raises(ImageError):
        image.load(arr)
    with pytest.raises(ImageError):
        codec.compress(arr)


def test_too_large_is_image_error(codec):
    with pytest.raises(ImageError, match="outside|limit"):
        codec.compress(np.zeros((1, 65536), np.uint8))


# ---- output -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "ext"),
                         [("RGBA", ".jpg"), ("RGBA", ".jpeg"), ("LA", ".jpg"), ("RGBA", ".bmp")])
def test_alpha_to_format_without_alpha_refused(tmp_path, mode, ext):
    img = Image.new(mode, (4, 4))
    path = tmp_path / f"out{ext}"
    with pytest.raises(OutputError, match="alpha"):
        image.save(img, path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".bmp", ".tif"])
def test_save_formats(tmp_path, make_image, ext):
    img = Image.fromarray(make_image(10, 12))
    path = tmp_path / f"out{ext}"
    image.save(img, path)
    with Image.open(path) as back:
        assert back.size == (12, 10)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_save_png_and_webp_are_lossless(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (6, 7, 4), dtype=np.uint8)
    for ext in (".png", ".webp"):
        path = tmp_path / f"a{ext}"
        image.save(Image.fromarray(arr, "RGBA"), path)
        with Image.open(path) as back:
            got = np.asarray(back.convert("RGBA"))
        assert np.array_equal(got[..., 3], arr[..., 3])
        visible = arr[..., 3] > 0  # libwebp may drop the colour of fully transparent pixels
        assert visible.sum() < visible.size
        assert np.array_equal(got[visible], arr[visible])


def test_unknown_output_extension(tmp_path):
    for name in ("out.xyz", "out"):
        with pytest.raises(OutputError, match="extension"):
            image.save(Image.new("RGB", (2, 2)), tmp_path / name)


def test_save_refuses_overwrite_without_force(tmp_path):
    path = tmp_path / "exists.png"
    path.write_bytes(b"original")
    with pytest.raises(OutputError, match="--force"):
        image.save(Image.new("RGB", (2, 2)), path)
    assert path.read_bytes() == b"original"
    image.save(Image.new("RGB", (2, 2)), path, force=True)
    with Image.open(path) as back:
        assert back.size == (2, 2)


class _Boom(RuntimeError):
    pass


def _failing_writer(f):
    f.write(b"partial data")
    raise _Boom("disk full")


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    path = tmp_path / "new.vaez"
    with pytest.raises(_Boom):
        image.write_atomic(path, _failing_writer)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_original_on_error(tmp_path):
    path = tmp_path / "old.vaez"
    path.write_bytes(b"original")
    with pytest.raises(_Boom):
        image.write_atomic(path, _failing_writer, force=True)
    assert path.read_bytes() == b"original"
    assert [p.name for p in tmp_path.iterdir()] == ["old.vaez"]


def test_atomic_write_on_interrupt(tmp_path):
    def interrupted(f):
        f.write(b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        image.write_atomic(tmp_path / "int.vaez", interrupted)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_success(tmp_path):
    path = tmp_path / "ok.vaez"
    image.write_atomic(path, lambda f: f.write(b"abc"))
    assert path.read_bytes() == b"abc"
    assert [p.name for p in tmp_path.iterdir()] == ["ok.vaez"]


def test_atomic_write_gives_the_umask_mode(tmp_path):
    """Outputs get the mode a plain open() would give, not mkstemp's private 0600."""
    old = os.umask(0o027)
    try:
        path = tmp_path / "out.vaez"
        image.write_atomic(path, lambda f: f.write(b"abc"))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640
