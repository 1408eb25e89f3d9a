"""The checkerboard context model's coding path: integer context network, two-part y stream.

A tiny random model with a non-zero context network (a trained one starts with its last layer at
zero, which would leave the path untested) is built with the training package, exported, and used
through the real Codec.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load, save

from training.export import export_model
from training.model import ModelConfig, VAEModel
from vaecodec import Codec, container
from vaecodec.errors import CorruptFileError, VaecodecError
from vaecodec.prior import MEAN_FRAC_BITS, checkerboard_anchors
from vaecodec.weights import model_id_of


@pytest.fixture(scope="module")
def context_model() -> VAEModel:
    torch.manual_seed(3)
    model = VAEModel(ModelConfig(n=8, m=16, context="checkerboard")).eval()
    with torch.no_grad():
        last = model.context.params[-1]
        last.weight.normal_(0, 0.3)
        last.bias.normal_(0, 2.0)
    return model


@pytest.fixture(scope="module")
def ctx_weights(context_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ctx") / "ctx.safetensors"
    export_model(context_model, path)
    return path


@pytest.fixture(scope="module")
def ctx_codec(ctx_weights) -> Codec:
    return Codec(model=str(ctx_weights), device="cpu")


def test_the_exported_model_has_the_integer_context(ctx_codec):
    m = ctx_codec.model
    assert m.latent.context is not None and m.config.context == "checkerboard"


def test_a_damaged_weights_file_is_refused_with_one_line(ctx_weights, tmp_path):
    data = ctx_weights.read_bytes()
    size = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8 : 8 + size])["__metadata__"]
    tensors = load(data)
    del tensors["ctx.w1"]  # well-formed, and the id recomputed: a file that does not fit its config
    metadata["model_id"] = model_id_of(json.loads(metadata["config"]), tensors).hex()
    (tmp_path / "damaged.safetensors").write_bytes(save(tensors, metadata=metadata))
    with pytest.raises(VaecodecError, match="damaged vaecodec weights file") as info:
        Codec(model=str(tmp_path / "damaged.safetensors"), device="cpu")
    assert "\n" not in str(info.value)

    flipped = bytearray(data)
    flipped[-3] ^= 0x04  # a byte of the last tensor: the content no longer hashes to the id
    (tmp_path / "flipped.safetensors").write_bytes(flipped)
    with pytest.raises(VaecodecError, match="damaged vaecodec weights file") as info:
        Codec(model=str(tmp_path / "flipped.safetensors"), device="cpu")
    assert "\n" not in str(info.value)


def test_round_trip_and_decoder_sees_the_encoder_integers(ctx_codec, make_image):
    img = make_image(72, 100, seed=4)
    for quality in (2.0, 7.5):
        data = ctx_codec.compress(img, quality)
        out = ctx_codec.decompress(data)
        assert out.size == (100, 72)
        enc = ctx_codec.latents([img], quality).numpy(0)
        dec = ctx_codec.decode_integers(data)
        assert all(np.array_equal(dec[k], enc[k]) for k in ("z", "y", "mean", "index"))


def test_context_refines_only_the_non_anchors(ctx_codec, make_image):
    """The anchors keep h_s's (mean, index); the context network changes the others."""
    data = ctx_codec.compress(make_image(64, 64, seed=5), 6.0)
    dec = ctx_codec.decode_integers(data)
    latent = ctx_codec.model.latent
    mean_hs, index_hs = latent.h_s(torch.from_numpy(dec["z"])[None])
    anchors = checkerboard_anchors(*dec["y"].shape[1:])[0].expand(dec["y"].shape).numpy()
    assert np.array_equal(dec["index"][anchors], index_hs[0].numpy()[anchors])
    assert np.array_equal(dec["mean"][anchors], mean_hs[0].numpy()[anchors])
    assert (dec["mean"][~anchors] != mean_hs[0].numpy()[~anchors]).mean() > 0.5
    assert (dec["index"][~anchors] != index_hs[0].numpy()[~anchors]).any()


def test_non_anchor_parameters_do_not_depend_on_non_anchor_symbols(ctx_codec):
    """What the decoder cannot know yet (non-anchor symbols) must not reach the context network."""
    m = ctx_codec.model
    rng = np.random.default_rng(0)
    shape = (1, m.config.m, 6, 8)
    y = torch.from_numpy(rng.integers(-5, 6, shape))
    mean = torch.from_numpy(rng.integers(-2000, 2000, shape))
    index = torch.from_numpy(rng.integers(0, 64, shape))
    anchors = checkerboard_anchors(6, 8)
    scrambled = torch.where(anchors, y, torch.from_numpy(rng.integers(-10**6, 10**6, shape)))
    a, b = m.latent.context(y, mean, index), m.latent.context(scrambled, mean, index)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_the_float_context_does_not_see_non_anchor_symbols(context_model):
    """The same for the float twin training uses: two_pass hands it the anchors' symbols only, and
    it must not look at anything else of ``sym`` either."""
    rng = np.random.default_rng(2)
    shape = (1, 16, 6, 8)
    sym = torch.from_numpy(rng.integers(-5, 6, shape)).float()
    mean = torch.from_numpy(rng.normal(0, 3, shape)).float()
    t = torch.from_numpy(rng.uniform(0, 63, shape)).float()
    anchors = checkerboard_anchors(6, 8)
    scrambled = torch.where(anchors, sym, torch.from_numpy(rng.normal(0, 100, shape)).float())
    with torch.no_grad():
        a, b = context_model.context(sym, mean, t), context_model.context(scrambled, mean, t)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(a[0][anchors.expand(shape)], mean[anchors.expand(shape)])  # anchors unchanged


@pytest.mark.parametrize("height, width", [(4, 4), (6, 10), (12, 8)])
def test_phase_split_context_layer_equals_the_full_convolution(ctx_codec, height, width):
    """The context layer computed per phase gives the full 5x5 convolution's integers over the
    anchors-only input, at every non-anchor, including the borders."""
    ctx = ctx_codec.model.latent.context
    rng = np.random.default_rng(height * width)
    y = torch.from_numpy(rng.integers(-300000, 300000, (2, 16, height, width))).double()
    anchors = checkerboard_anchors(height, width)
    full = ctx.layer(0, torch.where(anchors, y, 0.0))
    assert torch.equal(ctx._context(y), ctx._non_anchors(full))
    back = ctx._with_non_anchors(torch.zeros_like(full), ctx._non_anchors(full))
    assert torch.equal(back, torch.where(anchors, 0.0, full))


def test_integer_context_follows_the_float_one(context_model):
    """The exported network computes what the trained one does, to within its fixed-point steps."""
    float_ctx, int_ctx = context_model.context, context_model.context.to_integer()
    rng = np.random.default_rng(1)
    shape = (1, 16, 8, 8)
    y = torch.from_numpy(rng.integers(-6, 7, shape))
    mean_int = torch.from_numpy(rng.integers(-1500, 1500, shape))
    index = torch.from_numpy(rng.integers(5, 60, shape))
    mean_c, index_c = int_ctx(y, mean_int, index)
    anchors = checkerboard_anchors(8, 8)
    mean = mean_int.double() / 2**MEAN_FRAC_BITS
    with torch.no_grad():
        f_mean, f_t = float_ctx((y * anchors).float(), mean.float(), index.float())
    non_anchors = ~anchors.expand(shape)
    err_mean = (mean_c.double() / 2**MEAN_FRAC_BITS - f_mean.double())[non_anchors]
    err_index = (index_c.double() - f_t.double().clamp(0, 63))[non_anchors]
    assert err_mean.abs().max() < 0.02
    assert err_index.abs().max() <= 0.5 + 0.02


def test_thread_count_and_batching_do_not_change_the_integers(ctx_codec, make_image):
    data = ctx_codec.compress(make_image(64, 128, seed=6), 5.0)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ctx_codec.decode_integers(data)
        torch.set_num_threads(max(2, threads))
        many = ctx_codec.decode_integers(data)
    finally:
        torch.set_num_threads(threads)
    assert all(np.array_equal(one[k], many[k]) for k in one)
    batch = ctx_codec.compress_batch([make_image(64, 128, seed=6), make_image(64, 128, seed=7)], 5.0,
                                     batch_size=2)
    assert batch[0] == data


def test_the_decoder_checks_the_stream_after_the_second_part(ctx_codec, make_image):
    header, payload = container.unpack(ctx_codec.compress(make_image(64, 64, seed=8), 8.0))
    extra = container.pack(header, container.Payload(payload.stream, payload.escapes + b"\x00",
                                                     payload.alpha, payload.filter))
    with pytest.raises(CorruptFileError, match="trailing"):
        ctx_codec.decompress(extra)
