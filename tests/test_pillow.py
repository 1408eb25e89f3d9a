"""The Pillow plugin (vaecodec.pillow): .vaez through Image.open / Image.save."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image, ImageCms, UnidentifiedImageError

import vaecodec.pillow as vpil
from vaecodec import Codec, VaecodecError, container

H, W = 24, 32


@pytest.fixture(scope="module")
def rgb(make_image) -> Image.Image:
    return Image.fromarray(make_image(H, W, seed=7))


@pytest.fixture(scope="module")
def vaez_path(tmp_path_factory, codec, rgb):
    path = tmp_path_factory.mktemp("pillow") / "img.vaez"
    path.write_bytes(codec.compress(rgb, quality=5))
    return path


@pytest.fixture
def no_decode(monkeypatch):
    """Make any decode fail, so a test can show that it needs none."""
    def fail(*args, **kwargs):
        raise AssertionError("decoded")

    monkeypatch.setattr(Codec, "decompress", fail)
    monkeypatch.setattr(Codec, "decompress_batch", fail)


def test_registered():
    assert Image.registered_extensions()[".vaez"] == "VAEZ"
    assert Image.MIME["VAEZ"] == "image/x-vaez"
    assert "VAEZ" in Image.SAVE


def test_open_reads_the_header_without_decoding(vaez_path, no_decode):
    with Image.open(vaez_path) as im:
        assert (im.format, im.size, im.mode) == ("VAEZ", (W, H), "RGB")
        assert im.get_format_mimetype() == "image/x-vaez"
        assert im.vaez_header.quality == 5
        with pytest.raises(AssertionError, match="decoded"):
            im.load()


def test_open_does_not_import_torch(vaez_path):
    script = textwrap.dedent(f"""
        import sys
        import vaecodec.pillow
        from PIL import Image
        im = Image.open({str(vaez_path)!r})
        print(im.format, im.size, im.mode, "torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["VAEZ", f"({W},", f"{H})", "RGB", "False"]


def test_load_decodes_as_the_codec(vaez_path, codec):
    expected = np.asarray(codec.decompress(vaez_path.read_bytes()))
    with Image.open(vaez_path) as im:
        im.load()
        assert im.mode == "RGB" and im.size == (W, H)
        np.testing.assert_array_equal(np.asarray(im), expected)
        assert im.fp is None  # the file is closed once decoded
    with Image.open(io.BytesIO(vaez_path.read_bytes())) as im:  # a file object works as well as a path
        np.testing.assert_array_equal(np.asarray(im), expected)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_save_round_trip(tmp_path, codec, make_image, mode):
    arr = make_image(H, W, seed=8)
    if mode == "RGBA":
        arr = np.dstack([arr, np.tile(np.linspace(0, 255, W).astype(np.uint8), (H, 1))])
    img = Image.fromarray(arr).convert(mode)
    path = tmp_path / "x.vaez"
    img.save(path, quality=5)
    data = path.read_bytes()
    assert data == codec.compress(img, quality=5)
    with Image.open(path) as im:
        assert (im.format, im.mode, im.size) == ("VAEZ", mode, (W, H))
        np.testing.assert_array_equal(np.asarray(im), np.asarray(codec.decompress(data)))
        if mode == "RGBA":  # alpha is stored losslessly
            np.testing.assert_array_equal(np.asarray(im)[:, :, 3], arr[:, :, 3])


def test_save_to_a_file_object_with_options(rgb, codec):
    buf = io.BytesIO()
    rgb.save(buf, format="VAEZ", quality=3, effort=1, wiener=False)
    assert buf.getvalue() == codec.compress(rgb, quality=3, effort=1, wiener=False)


def test_decoded_image_saves_to_other_formats(vaez_path, tmp_path):
    with Image.open(vaez_path) as im:
        im.save(tmp_path / "x.png")
    with Image.open(tmp_path / "x.png") as im:
        assert im.size == (W, H)


@pytest.mark.parametrize("damage", ["flip", "truncate", "header"])
def test_damaged_file_is_a_clear_error(vaez_path, tmp_path, no_decode, damage):
    data = bytearray(vaez_path.read_bytes())
    if damage == "flip":
        data[-5] ^= 0x10
    elif damage == "truncate":
        del data[-3:]
    else:
        data = data[:10]
    bad = tmp_path / "bad.vaez"
    bad.write_bytes(bytes(data))
    with pytest.raises(vpil.VaezError) as info:
        Image.open(bad)
    assert isinstance(info.value, OSError) and isinstance(info.value, VaecodecError)
    assert "\n" not in str(info.value)
    assert any(word in str(info.value) for word in ("checksum", "truncated"))


def test_file_of_another_model_opens_and_fails_to_load(vaez_path, tmp_path):
    header, payload = container.unpack(vaez_path.read_bytes())
    other = tmp_path / "other.vaez"
    other.write_bytes(container.pack(dataclasses.replace(header, model_id=bytes(8)), payload))
    with Image.open(other) as im:
        assert im.size == (W, H)
        with pytest.raises(vpil.VaezError, match="model 0000000000000000"):
            im.load()


def test_other_files_are_not_claimed(tmp_path, rgb):
    png = tmp_path / "really_a_png.vaez"
    rgb.save(png, format="PNG")
    with Image.open(png) as im:
        assert im.format == "PNG"
    junk = tmp_path / "junk.vaez"
    junk.write_bytes(b"this is no image at all" * 4)
    with pytest.raises(UnidentifiedImageError):
        Image.open(junk)
    with pytest.raises(UnidentifiedImageError):
        Image.open(junk, formats=["VAEZ"])


def test_icc_profile_survives(tmp_path, rgb, no_decode):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    png = tmp_path / "icc.png"
    rgb.save(png, icc_profile=icc)
    vaez = tmp_path / "icc.vaez"
    Image.open(png).save(vaez, quality=3)
    with Image.open(vaez) as im:  # from the header, before decoding
        assert im.info["icc_profile"] == icc


def test_icc_profile_after_load_and_save_options(tmp_path, rgb):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img = rgb.copy()
    img.info["icc_profile"] = icc
    kept, stripped, replaced = (tmp_path / f"{n}.vaez" for n in ("kept", "stripped", "replaced"))
    img.save(kept, quality=3)
    img.save(stripped, quality=3, strip=True)
    img.save(replaced, quality=3, icc_profile=b"", xmp=b"<x:xmpmeta/>")
    with Image.open(kept) as im:
        im.load()
        assert im.info["icc_profile"] == icc
    with Image.open(stripped) as im:
        assert "icc_profile" not in im.info
    with Image.open(replaced) as im:
        assert "icc_profile" not in im.info and im.info["xmp"] == b"<x:xmpmeta/>"
    assert img.info["icc_profile"] == icc  # the caller's image is left as it was


def test_exif_kept_and_replaced(tmp_path, rgb):
    exif = Image.Exif()
    exif[0x010F] = "Maker"
    img = rgb.copy()
    img.info["exif"] = exif.tobytes()
    kept, replaced = tmp_path / "kept.vaez", tmp_path / "replaced.vaez"
    img.save(kept, quality=3)
    other = Image.Exif()
    other[0x0110] = "Model"
    img.save(replaced, quality=3, exif=other)  # an Exif object, as Pillow's writers take
    with Image.open(kept) as im:
        assert im.getexif()[0x010F] == "Maker"
    with Image.open(replaced) as im:
        assert dict(im.getexif()) == {0x0110: "Model"}


def test_save_target_size(tmp_path, rgb, codec):
    small, large = (len(codec.compress(rgb, quality=q)) for q in (1, 10))
    target = (small + large) // 2
    path = tmp_path / "t.vaez"
    rgb.save(path, target_size=target)
    assert small <= path.stat().st_size <= target


def test_bad_save_option_is_a_vaez_error(tmp_path, rgb):
    path = tmp_path / "q.vaez"
    with pytest.raises(vpil.VaezError):
        rgb.save(path, quality=85)  # JPEG's scale, not vaecodec's
    assert not path.exists()  # Pillow removes the file it created
