"""What the Python API takes and gives: every input type, every output form, errors passed through."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from vaecodec import ImageError, VaecodecError


@pytest.fixture(scope="module")
def rgb(make_image) -> np.ndarray:
    return make_image(24, 40, seed=6)


@pytest.fixture(scope="module")
def reference(codec, rgb) -> bytes:
    return codec.compress(rgb, 5)


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("make", [
    lambda a: torch.from_numpy(a).permute(2, 0, 1),  # CHW uint8
    lambda a: torch.from_numpy(a).permute(2, 0, 1)[None],  # NCHW, N = 1
    lambda a: torch.from_numpy(a).permute(2, 0, 1).float() / 255,  # float in [0, 1]
    lambda a: torch.from_numpy(a).permute(2, 0, 1).double().div(255).requires_grad_(),
    lambda a: np.ascontiguousarray(a.transpose(2, 0, 1)),  # numpy CHW
    lambda a: a.astype(np.float32) / 255,  # numpy float HWC
    lambda a: _png(a),  # bytes of a PNG
    lambda a: io.BytesIO(_png(a)),  # a binary file object
    lambda a: bytearray(_png(a)),
], ids=["chw", "nchw", "float", "double-grad", "numpy-chw", "numpy-float", "bytes", "bytesio", "bytearray"])
def test_every_input_form_codes_the_same_pixels(codec, rgb, reference, make):
    assert codec.compress(make(rgb), 5) == reference


def test_a_batch_tensor_is_a_batch_of_images(codec, rgb, reference):
    batch = torch.from_numpy(np.stack([rgb, rgb])).permute(0, 3, 1, 2)
    assert codec.compress_batch(batch, 5) == [reference, reference]


@pytest.mark.parametrize("bad", [
    torch.zeros(2, 3, 8, 8, dtype=torch.uint8),  # a batch where one image is expected
    torch.zeros(5, 8, 8, dtype=torch.uint8),  # five channels
    torch.full((3, 8, 8), 2.0),  # float outside [0, 1]
    b"not an image",
], ids=["batch", "5ch", "float-range", "bytes"])
def test_bad_inputs_are_one_line_errors(codec, bad):
    with pytest.raises(ImageError) as info:
        codec.compress(bad, 5)
    assert "\n" not in str(info.value)


def test_output_forms(codec, reference):
    pil = codec.decompress(reference)
    arr = codec.decompress(reference, output="numpy")
    ten = codec.decompress(reference, output="torch")
    assert arr.shape == (24, 40, 3) and arr.dtype == np.uint8
    assert ten.shape == (3, 24, 40) and ten.dtype == torch.uint8
    assert np.array_equal(np.asarray(pil), arr) and np.array_equal(ten.permute(1, 2, 0).numpy(), arr)
    assert codec.decompress(io.BytesIO(reference), output="numpy").shape == (24, 40, 3)
    with pytest.raises(VaecodecError, match="output"):
        codec.decompress(reference, output="jpeg")


def test_grey_output_forms(codec, rgb):
    data = codec.compress(rgb[..., 0], 5)
    assert codec.decompress(data, output="numpy").shape == (24, 40)
    assert codec.decompress(data, output="torch").shape == (1, 24, 40)


def test_batch_errors_pass_through_in_both_directions(codec, rgb):
    files = codec.compress_batch([rgb, b"junk", rgb[..., 0]], 5, on_error="return")
    assert isinstance(files[1], ImageError)
    images = codec.decompress_batch(files, on_error="return")
    assert images[1] is files[1]
    assert images[0].size == (40, 24) and images[2].mode == "L"
    with pytest.raises(ImageError):
        codec.decompress_batch(files)  # "raise": the error it was handed is raised


def test_quality_and_a_target_exclude_each_other(codec, rgb):
    with pytest.raises(VaecodecError, match="exclude"):
        codec.compress(rgb, 5, target_bpp=0.5)
    with pytest.raises(VaecodecError, match="exclude"):
        codec.compress(rgb, target_bpp=0.5, target_psnr=30)
    with pytest.raises(VaecodecError, match="positive"):
        codec.compress(rgb, target_size=0)
