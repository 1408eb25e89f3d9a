"""Entropy coding: integer tables, escapes, and exact encoder/decoder agreement on the latents."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.export import export_model
from training.model import ModelConfig, VAEModel
from vaecodec import Codec, CorruptFileError, container, entropy
from vaecodec.entropy import TOTAL, EscapeReader, StreamDecoder, TableSet, quantize_pmf, write_escapes
from vaecodec.prior import MEAN_FRAC_BITS, NUM_SCALES
from vaecodec.quality import level_of
from vaecodec.quantize import symbols
from vaecodec.transforms import pad

# ---- quantize_pmf / TableSet ------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_quantize_pmf_sums_and_is_deterministic(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    probs = rng.random(n) ** 4
    probs[rng.random(n) < 0.2] = 0.0
    tail = float(rng.random() * 1e-3)
    q = quantize_pmf(probs, tail)
    assert q.dtype == np.int64
    assert len(q) == n + 1
    assert int(q.sum()) == TOTAL - len(q)
    assert (q >= 0).all()
    assert np.array_equal(q, quantize_pmf(probs.copy(), tail))
    # close to the float distribution
    p = np.append(probs, tail) / (probs.sum() + tail)
    assert np.abs(q / (TOTAL - len(q)) - p).max() < 1e-6


def test_quantize_pmf_edge_cases():
    q = quantize_pmf(np.full(3, 1 / 3), 0.0)  # equal remainders: ties broken by position
    assert int(q.sum()) == TOTAL - 4 and q[3] == 0
    assert np.array_equal(q, quantize_pmf(np.full(3, 1 / 3), 0.0))
    assert q[0] >= q[1] >= q[2] and q[0] - q[2] <= 1
    q = quantize_pmf(np.array([0.5, 0.5]), -0.25)  # negative tail is treated as zero
    assert int(q.sum()) == TOTAL - 3 and q[2] == 0
    q = quantize_pmf(np.zeros(5), 1.0)  # all mass in the escape
    assert q[-1] == TOTAL - 6 and (q[:-1] == 0).all()


def _good_tables() -> TableSet:
    return TableSet.from_tables([(-2, quantize_pmf(np.array([1, 2, 3, 2, 1.0]), 1e-3)),
                                 (0, quantize_pmf(np.array([0.9, 0.1]), 1e-4))])


def test_tableset_validate_accepts_good():
    t = _good_tables()
    t.validate()
    assert [len(q) for q in t.split()] == [6, 3]


@pytest.mark.parametrize("damage", ["sizes", "short", "long", "negative", "sum", "offsets"])
def test_tableset_validate_rejects_bad(damage):
    t = _good_tables()
    if damage == "sizes":
        t.pmfs = t.pmfs[:-1]
    elif damage == "short":
        t = TableSet.from_tables([(0, np.array([TOTAL - 1]))])
    elif damage == "long":
        n = entropy.MAX_TABLE_LENGTH + 1
        q = np.zeros(n, np.int64)
        q[0] = TOTAL - n
        t = TableSet.from_tables([(0, q)])
    elif damage == "negative":
        t = TableSet.from_tables([(0, np.array([-1, TOTAL - 3, 1]))])  # right sum, negative entry
    elif damage == "sum":
        t.pmfs[-1] += 1
    elif damage == "offsets":
        t.offsets = t.offsets[:1]
    with pytest.raises(ValueError, match="entropy tables"):
        t.validate()
    with pytest.raises(ValueError):
        entropy.TableCoder(t)


# ---- escapes ----------------------------------------------------------------------------------

VARINT_VALUES = [0, 1, -1, 63, -64, 64, -65, 127, 128, 300, -300, 10**6, -(10**6), 2**31, -(2**31),
                 2**52 + 1, -(2**62), 2**63 - 1, -(2**63)]


def test_varints_round_trip():
    data = write_escapes(VARINT_VALUES)
    reader = EscapeReader(data)
    assert reader.take(len(VARINT_VALUES)).tolist() == VARINT_VALUES
    reader.finish()
    assert write_escapes([0, -1, 1]) == bytes([0, 1, 2])  # zigzag LEB128


def test_varints_in_pieces():
    reader = EscapeReader(write_escapes(VARINT_VALUES))
    got = [*reader.take(3).tolist(), *reader.take(0).tolist(), *reader.take(len(VARINT_VALUES) - 3).tolist()]
    assert got == VARINT_VALUES


@pytest.mark.parametrize("cut", [1, 2, 5])
def test_truncated_escape_stream(cut):
    data = write_escapes([5, -(10**9), 2**40])
    reader = EscapeReader(data[:-cut])
    with pytest.raises(CorruptFileError, match="escape"):
        reader.take(3)


def test_escape_stream_trailing_bytes():
    reader = EscapeReader(write_escapes([1, 2, 3]))
    reader.take(2)
    with pytest.raises(CorruptFileError, match="trailing"):
        reader.finish()


def test_overlong_varint():
    with pytest.raises(CorruptFileError):
        EscapeReader(b"\x80" * 10 + b"\x01").take(1)


def test_varint_beyond_int64_is_corruption():
    with pytest.raises(CorruptFileError):
        EscapeReader(b"\xff" * 9 + b"\x7f").take(1)


# ---- coding with the loaded model's tables ----------------------------------------------------


def _edge_values(tables: TableSet, t: int) -> list[int]:
    lo = int(tables.offsets[t])
    hi = lo + int(tables.lengths[t]) - 2  # last value coded without an escape
    return [lo - 1, lo, hi, hi + 1]


def _escaped(tables: TableSet, t: int, v: int) -> bool:
    return not int(tables.offsets[t]) <= v <= int(tables.offsets[t] + tables.lengths[t]) - 2


def test_escape_round_trip_with_model_tables(codec):
    m = codec.model
    zt, yt = m.latent.z_coder.tables, m.latent.y_coder.tables
    rng = np.random.default_rng(0)
    n = m.config.n
    z = rng.integers(-3, 4, (n, 2, 3)).astype(np.int64)
    for c in range(n):
        z[c, 0, :] = [*_edge_values(zt, c)[:3]]
        z[c, 1, 0] = _edge_values(zt, c)[3]
    z[0, 1, 1], z[1, 1, 2], z[n - 1, 1, 1] = 10**6, -(10**6), 2**40

    y_table = rng.integers(0, NUM_SCALES, (m.config.m, 8, 12)).astype(np.int64)
    y = rng.integers(-2, 3, y_table.shape).astype(np.int64)
    flat_t, flat_y = y_table.reshape(-1), y.reshape(-1)
    for t in range(NUM_SCALES):  # every edge of every y table
        pos = np.flatnonzero(flat_t == t)
        assert len(pos) >= 8
        flat_y[pos[:4]] = _edge_values(yt, t)
    flat_y[:6] = [10**6, -(10**6), 2**20, -(2**20), 2**62, -(2**62)]

    stream, escapes = entropy.encode(m.latent.z_coder, z, m.latent.y_coder, [(y, y_table)])
    assert len(stream) % 4 == 0
    # the escape stream holds exactly the out-of-range values, z by channel then y by table
    expected = [v for c in range(n) for v in z[c].ravel().tolist() if _escaped(zt, c, v)]
    expected += [int(v) for t in range(NUM_SCALES) for v in flat_y[flat_t == t] if _escaped(yt, t, int(v))]
    assert len(expected) >= 2 * n + 2 * NUM_SCALES + 6
    reader = EscapeReader(escapes)
    assert reader.take(len(expected)).tolist() == expected
    reader.finish()

    dec = StreamDecoder(stream, escapes)
    z_dec = dec.z(m.latent.z_coder, z.shape)
    y_dec = dec.y(m.latent.y_coder, y_table)
    dec.finish()
    assert np.array_equal(z_dec, z)
    assert np.array_equal(y_dec, y)


def test_no_escapes_for_in_range_values(codec):
    m = codec.model
    z = np.zeros((m.config.n, 1, 1), np.int64)
    y_table = np.full((m.config.m, 4, 4), NUM_SCALES - 1, np.int64)
    y = np.zeros(y_table.shape, np.int64)
    stream, escapes = entropy.encode(m.latent.z_coder, z, m.latent.y_coder, [(y, y_table)])
    assert escapes == b""
    dec = StreamDecoder(stream, escapes)
    assert np.array_equal(dec.z(m.latent.z_coder, z.shape), z)
    assert np.array_equal(dec.y(m.latent.y_coder, y_table), y)
    dec.finish()


def test_decoder_detects_truncated_escapes(codec):
    m = codec.model
    z = np.zeros((m.config.n, 1, 1), np.int64)
    z[3, 0, 0] = 10**5
    y_table = np.zeros((m.config.m, 4, 4), np.int64)
    y = np.zeros(y_table.shape, np.int64)
    y[0, 0, 0] = -(10**7)
    stream, escapes = entropy.encode(m.latent.z_coder, z, m.latent.y_coder, [(y, y_table)])
    dec = StreamDecoder(stream, escapes[:-1])
    dec.z(m.latent.z_coder, z.shape)
    with pytest.raises(CorruptFileError):
        dec.y(m.latent.y_coder, y_table)
    dec = StreamDecoder(stream, escapes + b"\x00")
    dec.z(m.latent.z_coder, z.shape)
    dec.y(m.latent.y_coder, y_table)
    with pytest.raises(CorruptFileError):
        dec.finish()


def test_stream_length_not_multiple_of_four():
    with pytest.raises(CorruptFileError, match="multiple of 4"):
        StreamDecoder(b"\x01\x02\x03", b"")


# ---- the decoder sees exactly the encoder's symbols -------------------------------------------


@pytest.fixture(scope="module")
def plain_codec(tmp_path_factory) -> Codec:
    """A model without a context model, whose one-part y stream this test re-implements (the
    two-part stream of context models: tests/test_context.py). A small random one: the shipped
    model is a context model."""
    torch.manual_seed(7)
    model = VAEModel(ModelConfig(n=16, m=32)).eval()
    with torch.no_grad():
        model.g_a[-1].weight.mul_(30)  # latents of a few units, as a trained model's, not all zero
    path = tmp_path_factory.mktemp("plain") / "plain.safetensors"
    export_model(model, path)
    return Codec(model=str(path), device="cpu")


@pytest.mark.parametrize("quality", [2.0, 6.25])
def test_decoded_symbols_equal_encoder_symbols(plain_codec, make_image, quality):
    """Re-run the encoder path step by step and compare with what the file decodes to."""
    codec = plain_codec
    m = codec.model
    img = make_image(40, 72, seed=9)
    data = codec.compress(img, quality)
    header, payload = container.unpack(data)
    assert header.quality == quality

    with torch.inference_mode():
        x = pad(torch.from_numpy(img).permute(2, 0, 1).float()[None] / 255)
        level = torch.full((1,), level_of(quality))
        y = m.analyze(x, level)
        z = symbols(m.latent.h_a(y))
        mean, index = m.latent.h_s(z)
        y_sym = symbols(y, mean.double() / 2**MEAN_FRAC_BITS)
    z_enc, y_enc, index_enc = z[0].numpy(), y_sym[0].numpy(), index[0].numpy()
    assert np.abs(y_enc).max() > 0  # not a trivial all-zero latent

    dec = StreamDecoder(payload.stream, payload.escapes)
    z_dec = dec.z(m.latent.z_coder, z_enc.shape)
    assert np.array_equal(z_dec, z_enc)
    _, index_dec = m.latent.h_s(torch.from_numpy(z_dec)[None])
    assert np.array_equal(index_dec[0].numpy(), index_enc)
    y_dec = dec.y(m.latent.y_coder, index_dec[0].numpy())
    assert np.array_equal(y_dec, y_enc)
