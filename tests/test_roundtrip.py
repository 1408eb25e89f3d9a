"""Codec API round trips: every supported input kind decodes to the right size, mode and quality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import PSNR_FLOOR, psnr, smooth_image
from PIL import Image

import vaecodec
from vaecodec import Codec, CorruptFileError, ImageError, VaecodecError, container


@pytest.mark.parametrize(("width", "height"), [(1, 1), (33, 17), (513, 257)])
def test_rgb_sizes(codec, make_image, width, height):
    img = make_image(height, width)
    out = codec.decompress(codec.compress(img, quality=10))
    assert out.mode == "RGB"
    assert out.size == (width, height)
    if width * height > 1:
        assert psnr(out, img) > PSNR_FLOOR


def test_psnr_is_about_this_image(codec, make_image):
    """The decoded image resembles its own input much more than an unrelated one (same statistics)."""
    img = make_image(64, 64, seed=1)
    out = np.asarray(codec.decompress(codec.compress(img, quality=10)))
    assert psnr(out, img) > PSNR_FLOOR
    assert psnr(out, img) > psnr(out, img[::-1, ::-1]) + 3


def test_compress_is_deterministic(codec, make_image):
    img = make_image(40, 48)
    assert codec.compress(img, 5) == codec.compress(img, 5)


def test_grayscale_l(codec, make_image):
    grey = Image.fromarray(make_image(24, 40)).convert("L")
    out = codec.decompress(codec.compress(grey, quality=10))
    assert out.mode == "L"
    assert out.size == grey.size
    assert psnr(out, grey) > PSNR_FLOOR


def test_rgba_alpha_is_lossless(codec, make_image):
    rng = np.random.default_rng(5)
    alpha = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    img = Image.fromarray(np.dstack([make_image(20, 30), alpha]), "RGBA")
    out = codec.decompress(codec.compress(img, quality=3))
    assert out.mode == "RGBA"
    assert out.size == (30, 20)
    assert np.array_equal(np.asarray(out)[:, :, 3], alpha)
    assert psnr(np.asarray(out)[:, :, :3], make_image(20, 30)) > PSNR_FLOOR - 3  # quality 3


def test_la_alpha_is_lossless(codec, make_image):
    grey = np.asarray(Image.fromarray(make_image(18, 21)).convert("L"))
    alpha = np.tile(np.linspace(0, 255, 21).astype(np.uint8), (18, 1))
    alpha[5:9, 3:7] = 0
    img = Image.fromarray(np.dstack([grey, alpha]), "LA")
    out = codec.decompress(codec.compress(img, quality=10))
    assert out.mode == "LA"
    assert out.size == (21, 18)
    assert np.array_equal(np.asarray(out)[:, :, 1], alpha)
    assert psnr(np.asarray(out)[:, :, 0], grey) > PSNR_FLOOR


def _palette_image() -> Image.Image:
    """A 16-colour palette version of a smooth synthetic image (what a GIF of a photo looks like)."""
    return Image.fromarray(smooth_image(48, 64, seed=5)).quantize(16)


def test_palette_decodes_as_rgb(codec):
    im = _palette_image()
    assert "transparency" not in im.info
    out = codec.decompress(codec.compress(im, quality=10))
    assert out.mode == "RGB"
    assert out.size == im.size
    assert psnr(out, im.convert("RGB")) > PSNR_FLOOR - 2  # palette steps are hard edges


def test_palette_with_transparency_decodes_as_rgba(codec):
    im = _palette_image()
    im.info["transparency"] = 2
    expected_alpha = np.asarray(im.convert("RGBA"))[:, :, 3]
    assert expected_alpha.min() == 0 and expected_alpha.max() == 255
    out = codec.decompress(codec.compress(im, quality=5))
    assert out.mode == "RGBA"
    assert out.size == im.size
    assert np.array_equal(np.asarray(out)[:, :, 3], expected_alpha)


def test_numpy_inputs(codec, make_image):
    rgb = make_image(19, 23)
    out = codec.decompress(codec.compress(rgb, 8))
    assert (out.mode, out.size) == ("RGB", (23, 19))

    grey = rgb[:, :, 1].copy()
    out = codec.decompress(codec.compress(grey, 8))
    assert (out.mode, out.size) == ("L", (23, 19))
    assert psnr(out, grey) > PSNR_FLOOR

    alpha = (np.arange(19 * 23).reshape(19, 23) % 256).astype(np.uint8)
    out = codec.decompress(codec.compress(np.dstack([rgb, alpha]), 8))
    assert (out.mode, out.size) == ("RGBA", (23, 19))
    assert np.array_equal(np.asarray(out)[:, :, 3], alpha)


def test_pil_and_path_inputs(codec, make_image, tmp_path):
    img = Image.fromarray(make_image(26, 35))
    path = tmp_path / "in.png"
    img.save(path)
    from_pil = codec.compress(img, 6)
    for src in (str(path), path):
        data = codec.compress(src, 6)
        out = codec.decompress(data)
        assert (out.mode, out.size) == ("RGB", (35, 26))
        assert psnr(out, img) > PSNR_FLOOR
        assert data == from_pil  # same pixels, same file


def test_decompress_accepts_path_and_bytes(codec, small_vaez, tmp_path):
    path = tmp_path / "a.vaez"
    path.write_bytes(small_vaez)
    by_bytes = np.asarray(codec.decompress(small_vaez))
    assert np.array_equal(np.asarray(codec.decompress(path)), by_bytes)
    assert np.array_equal(np.asarray(codec.decompress(str(path))), by_bytes)
    assert np.array_equal(np.asarray(codec.decompress(bytearray(small_vaez))), by_bytes)


def test_decompress_missing_file(codec, tmp_path):
    with pytest.raises(VaecodecError, match="no such file"):
        codec.decompress(tmp_path / "missing.vaez")


def test_quality_monotonic_size(codec, make_image):
    img = make_image(64, 64, seed=2)
    assert len(codec.compress(img, 1)) < len(codec.compress(img, 8))


def test_fractional_quality_in_header(codec, make_image):
    img = make_image(20, 20)
    data = codec.compress(img, 3.5)
    header, size = Codec.info(data)
    assert header.quality == 3.5
    assert size == len(data)
    assert (header.width, header.height, header.mode) == (20, 20, "RGB")
    assert header.model_id == codec.model.model_id
    out = codec.decompress(data)
    assert psnr(out, img) > PSNR_FLOOR - 2


@pytest.mark.parametrize("quality", [0.99, 10.01, -1, float("nan")])
def test_quality_out_of_range(codec, make_image, quality):
    with pytest.raises(VaecodecError, match="quality"):
        codec.compress(make_image(8, 8), quality)


def test_compress_batch_returns_errors_in_place(codec, make_image):
    good_a, good_b = make_image(16, 16, seed=7), make_image(30, 70, seed=8)
    res = codec.compress_batch([good_a, np.zeros((4, 4), np.int64), good_b], 5, on_error="return")
    assert len(res) == 3
    assert isinstance(res[1], ImageError)
    assert Codec.info(res[0])[0].width == 16
    assert codec.decompress(res[2]).size == (70, 30)
    with pytest.raises(ImageError):
        codec.compress_batch([good_a, np.zeros((4, 4), np.int64)], 5)


def test_decompress_batch_returns_errors_in_place(codec, small_vaez, small_rgba_vaez):
    header, payload = container.unpack(small_rgba_vaez)
    bad_alpha = container.pack(header, container.Payload(payload.stream, payload.escapes, b"not a png"))
    files = [small_vaez, small_vaez[:-1], small_rgba_vaez, bad_alpha]
    res = codec.decompress_batch(files, on_error="return")
    assert [type(r) for r in res[1::2]] == [CorruptFileError, CorruptFileError]
    assert (res[0].mode, res[0].size) == ("RGB", (16, 16))
    assert (res[2].mode, res[2].size) == ("RGBA", (16, 16))
    assert np.array_equal(np.asarray(res[0]), np.asarray(codec.decompress(small_vaez)))


def test_multi_image_batches_keep_order_and_sizes(codec, make_image):
    """Batches of several images per network pass (the CUDA default; explicit here on the CPU)."""
    assert codec.default_batch_size == 1  # on the CPU, one image per pass is faster
    images = [make_image(32, 48, seed=1), make_image(20, 20, seed=2), make_image(32, 48, seed=3),
              make_image(32, 48, seed=4)]
    files = codec.compress_batch(images, 6, batch_size=3)
    out = codec.decompress_batch(files, batch_size=3)
    for img, dec, single in zip(images, out, files, strict=True):
        assert dec.size == (img.shape[1], img.shape[0])
        assert psnr(dec, img) > PSNR_FLOOR - 2
        # a batched pass may differ from a single one by float rounding in the transforms only
        assert np.abs(np.asarray(dec, np.int16) - np.asarray(codec.decompress(single), np.int16)).max() <= 2


def test_module_level_api(make_image):
    img = make_image(12, 9)
    out = vaecodec.decompress(vaecodec.compress(img, quality=7))
    assert (out.mode, out.size) == ("RGB", (9, 12))


def test_unknown_model_name():
    with pytest.raises(VaecodecError, match="unknown model"):
        Codec("no-such-model-name", device="cpu")


def test_shipped_model_by_name(codec):
    name = Path(codec.model.name).name
    assert Codec(name, device="cpu").model.model_id == codec.model.model_id
