"""The latent tools: exact bits, rate maps against real files, latents in and out of the codec,
interpolation, samples, surprise and its statistics in the weights file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from vaecodec import VaecodecError, container, weights
from vaecodec.bits import BitWriter
from vaecodec.entropy import TOTAL, TableSet, quantize_pmf
from vaecodec.latent_tools import (
    CALIBRATION_KEY,
    FEATURES,
    Calibration,
    block_pixels,
    interpolate,
    rate_map,
    sample,
    surprise,
    window_cost,
)

# constriction's ANS coder ends by flushing its 64-bit state as two 32-bit words, and a stream is
# whole words: the file holds the symbols' information plus up to 3 words, and can undercut it by at
# most the one word of state the coder starts with
ANS_SLACK = (-32, 96)


def noise_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_symbol_bits_are_the_tables_probabilities_and_the_escape_varints():
    q = quantize_pmf(np.array([0.1, 0.6, 0.3]), 1e-4)  # values -1, 0, 1 and the escape
    tables = TableSet.from_tables([(-1, q)])
    values = np.array([-1, 0, 1, 2, -2, 300, -(2**40)])
    bits = tables.symbol_bits(values, np.zeros(len(values), dtype=np.int64))
    for k, v in enumerate(values):
        entry = v + 1 if -1 <= v <= 1 else 3
        expected = -np.log2((q[entry] + 1) / TOTAL)
        if entry == 3:
            w = BitWriter()
            w.signed_varint(int(v))
            expected += 8 * len(w.getvalue())
        assert bits[k] == pytest.approx(expected, rel=1e-12), v


@pytest.mark.parametrize("size,quality", [((48, 80), 3), ((33, 17), 9.5)])
def test_the_rate_map_totals_the_files_payload(codec, make_image, size, quality):
    img = make_image(*size, seed=5)
    data = codec.compress(img, quality, wiener=False)
    payload = container.unpack(data)[1]
    coded = 8 * (len(payload.stream) + len(payload.escapes))
    latents = codec.encode_latents(img, quality)
    rates = rate_map(latents)
    assert rates.total == pytest.approx(latents.bits, rel=1e-12)
    assert ANS_SLACK[0] <= coded - rates.total <= ANS_SLACK[1]
    assert rates.bits.shape == (-(-size[0] // 16), -(-size[1] // 16))
    assert rates.pixels.sum() == size[0] * size[1]
    assert rates.y_bits + rates.z_bits == pytest.approx(rates.total)
    from_file = codec.file_latents(data)  # the same symbols, read back from the file
    assert np.array_equal(from_file.y, latents.y) and np.array_equal(from_file.z, latents.z)


def test_block_pixels_and_windows():
    assert block_pixels((40, 20)).tolist() == [[256, 256, 128], [64, 64, 32]]
    cost = np.arange(30, dtype=np.float64).reshape(5, 6)
    windows = window_cost(cost, 4)
    assert windows.shape == (2, 3)
    assert windows[1, 2] == pytest.approx(cost[1:5, 2:6].mean())
    assert window_cost(cost[:2, :3], 4).tolist() == [[cost[:2, :3].mean()]]


def test_decode_latents_draws_what_decompress_draws(codec, make_image):
    img = make_image(40, 56, seed=6)
    data = codec.compress(img, 6, wiener=False)
    assert np.array_equal(np.asarray(codec.decode_latents(codec.file_latents(data))),
                          np.asarray(codec.decompress(data)))
    latents = codec.encode_latents(img, 6)
    assert latents.quality == 6 and latents.size == (56, 40)
    assert latents.y.dtype == np.int64 and latents.y_bits.shape == latents.y.shape


def test_interpolation_ends_are_the_decoded_images_and_b_is_resized(codec, make_image):
    a, b = make_image(32, 48, seed=1), make_image(40, 24, seed=2)
    frames = interpolate(codec, a, b, [0, 0.5, 1], 5)
    assert all(f.size == (48, 32) for f in frames)
    assert np.array_equal(np.asarray(frames[0]), np.asarray(codec.decode_latents(codec.encode_latents(a, 5))))
    assert not np.array_equal(np.asarray(frames[0]), np.asarray(frames[2]))
    assert np.array_equal(np.asarray(codec.interpolate(a, b, 0.5, 5)), np.asarray(frames[1]))


def test_samples_are_deterministic_for_a_seed(codec):
    first, again, other = (np.asarray(sample(codec, (40, 24), seed)) for seed in (7, 7, 8))
    assert first.shape == (24, 40, 3)
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_noise_is_more_surprising_than_a_smooth_photo(codec, make_image):
    cal = Calibration.of(codec)
    smooth = surprise(codec, make_image(64, 64, seed=3), cal)
    noisy = surprise(codec, noise_image(64, 64), cal)
    # uniform noise leaves no block cheap: its floor is far above a smooth image's
    assert noisy.features["floor"] > smooth.features["floor"] + 1 and noisy.score > smooth.score + 1
    assert noisy.features["image"] > smooth.features["image"] + 1
    assert noisy.blocks.shape == (4, 4) and noisy.totals()["quality"] == cal.quality


def test_the_shipped_weights_carry_statistics_outside_the_model_id(codec):
    path = weights.resolve(None)
    w = weights.read(path)
    assert w.model_id == codec.model.model_id == weights.model_id_of(w.config, w.tensors)
    cal = Calibration.from_json(w.extras[CALIBRATION_KEY])
    assert cal.photos > 100 and set(cal.features) == set(FEATURES)


def test_extras_change_no_model_id_and_are_checked(codec, tmp_path):
    w = weights.read(weights.resolve(None))
    cal = Calibration(5.0, 1 / 64, 4, {k: (0.0, 1.0) for k in FEATURES}, (-2.0, 2.0), 3, "test")
    path = tmp_path / "m.safetensors"
    assert weights.write(path, w.config, w.tensors, {CALIBRATION_KEY: cal.to_json()}) == w.model_id
    again = weights.read(path)
    assert again.model_id == w.model_id and Calibration.from_json(again.extras[CALIBRATION_KEY]) == cal
    with pytest.raises(ValueError):
        weights.write(path, w.config, w.tensors, {"model_id": "0" * 16})
    zero_std = cal.to_json().replace('"image": [0.0, 1.0]', '"image": [0.0, 0.0]')
    assert zero_std != cal.to_json()
    for bad in ("{", json.dumps({"version": 99}), zero_std):
        with pytest.raises(VaecodecError, match="surprise statistics"):
            Calibration.from_json(bad)


def test_heat_map_picture(codec, make_image):
    from vaecodec.latent_tools import analysis

    result = analysis(codec, Image.fromarray(make_image(48, 64, seed=4)), 4, wiener=False)
    picture = result.picture()
    assert picture.width > 2 * 64 and picture.height >= 48
    totals = result.totals()
    assert totals["side_bits"] + totals["latent_bits"] == pytest.approx(totals["file_bits"], abs=0.2)
    assert sum(totals["channel_share"]) == pytest.approx(1, abs=1e-3)
