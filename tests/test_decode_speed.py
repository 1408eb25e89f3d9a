"""The decoder's fast synthesis: the inference layout of g_s and the post-filter, its bfloat16
option, and the choice of precision with its fallback to float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import psnr
from torch.nn import functional as F

from vaecodec import Codec, model, wiener
from vaecodec.errors import VaecodecError
from vaecodec.transforms import _phases

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_transposed_convolution_as_phases_is_the_same_sums():
    torch.manual_seed(0)
    layer = torch.nn.ConvTranspose2d(6, 3, 5, stride=2, padding=2, output_padding=1)
    x = torch.randn(2, 6, 7, 9)
    weight, bias = _phases(layer)
    with torch.no_grad():
        expected = layer(x)
        got = F.pixel_shuffle(F.conv2d(x, weight, bias, padding=1), 2)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5)


def test_inference_layout_matches_the_layers_in_float32(codec):
    m = codec.model
    before = m.synthesis_dtype
    m.set_synthesis_dtype(torch.float32)
    try:
        torch.manual_seed(1)
        y = torch.randn(1, m.config.m, 5, 7) * 4
        level = torch.tensor([5.0])
        with torch.no_grad():
            fast = m.synthesize(y, level)
        with torch.enable_grad():  # the layers as they are (training, the latent search)
            slow = m.synthesize(y, level)
    finally:
        m.set_synthesis_dtype(before)
    assert fast.dtype == torch.float32
    assert torch.allclose(fast, slow, atol=1e-4)


def test_autograd_still_reaches_the_latents(codec):
    y = torch.randn(1, codec.model.config.m, 2, 2, requires_grad=True)
    codec.model.synthesize(y, torch.tensor([3.0])).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0


def _decoded(codec: Codec, data: bytes, dtype: torch.dtype) -> np.ndarray:
    before = codec.model.synthesis_dtype
    codec.model.set_synthesis_dtype(dtype)
    try:
        return np.asarray(codec.decompress(data)).astype(int)
    finally:
        codec.model.set_synthesis_dtype(before)


def test_bfloat16_synthesis_stays_close_to_float32(codec, make_image):
    img = make_image(64, 96, seed=21)
    data = codec.compress(img, quality=7)
    f32, bf16 = _decoded(codec, data, torch.float32), _decoded(codec, data, torch.bfloat16)
    assert np.abs(f32 - bf16).max() <= 3  # the bound tests/test_golden.py and the docs give
    assert np.mean(f32 != bf16) < 0.4
    assert psnr(bf16, f32) > 45
    assert abs(psnr(bf16, img) - psnr(f32, img)) < 0.1


def test_the_filter_is_fitted_to_the_synthesis_the_decoder_runs(codec, make_image):
    img = make_image(64, 64, seed=22)
    for dtype in (torch.float32, torch.bfloat16):
        before = codec.model.synthesis_dtype
        codec.model.set_synthesis_dtype(dtype)
        try:
            data = codec.compress(img, quality=9)
            parsed = codec.parse(data)
            level = codec._level(parsed.header.quality, 1)
            decoded = codec.synthesis(codec._decode(parsed).y_hat, level, [parsed.size])[0]
            refit = codec._fit_filter(decoded, codec._load(img), level)
        finally:
            codec.model.set_synthesis_dtype(before)
        assert parsed.filter is not None and refit is not None
        assert wiener.encode(refit) == wiener.encode(parsed.filter)


def test_precision_choice_and_its_fallback(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.delenv(model.PRECISION_ENV, raising=False)
    monkeypatch.setattr(model, "_native_bfloat16", lambda: False)
    assert model.synthesis_dtype(cpu, "auto") == torch.float32  # no native bfloat16: never emulated
    monkeypatch.setattr(model, "_native_bfloat16", lambda: True)
    assert model.synthesis_dtype(cpu) == torch.float32  # the default keeps machines in agreement
    assert model.synthesis_dtype(cpu, "auto") == torch.bfloat16
    assert model.synthesis_dtype(cuda, "auto") == torch.float32
    assert model.synthesis_dtype(cpu, "bfloat16") == torch.bfloat16
    monkeypatch.setenv(model.PRECISION_ENV, "auto")
    assert model.synthesis_dtype(cpu) == torch.bfloat16
    monkeypatch.setenv(model.PRECISION_ENV, "half")
    with pytest.raises(VaecodecError, match="precision"):
        model.synthesis_dtype(cpu)


def test_a_torch_without_the_probes_counts_as_no_bfloat16(monkeypatch):
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    assert model._native_bfloat16() is False
