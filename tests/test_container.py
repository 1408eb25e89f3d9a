"""The .vaez container: every damaged file is refused with a VaecodecError, never decoded or crashed on."""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np
import pytest
from conftest import png_header_only

from vaecodec import Codec, CorruptFileError, UnsupportedFileError, VaecodecError, container, weights
from vaecodec.bits import BitReader


def _header_len(data: bytes) -> int:
    _, payload = container.unpack(data)
    return len(data) - len(payload.stream) - len(payload.escapes) - len(payload.alpha)


def _recrc(data: bytes | bytearray) -> bytes:
    """Recompute the CRC of a (modified) file whose header layout is unchanged."""
    data = bytearray(data)
    reader = BitReader(bytes(data), "header", 8 * container._FIXED.size)
    for _ in range(6):
        reader.varint(5)
    pos = reader.byte_pos + 4  # after the symbols' checksum
    crc = zlib.crc32(bytes(data[pos + 4 :]), zlib.crc32(bytes(data[:pos])))
    data[pos : pos + 4] = struct.pack("<I", crc)
    return bytes(data)


def _refused(codec: Codec, data: bytes) -> VaecodecError:
    with pytest.raises(VaecodecError) as info:
        codec.decompress(data)
    assert type(info.value) in (CorruptFileError, UnsupportedFileError)
    return info.value


def test_pack_unpack_round_trip():
    header = container.Header(bytes(range(8)), "LA", 7.25, 300, 1)
    payload = container.Payload(b"\x01\x02\x03\x04" * 3, b"\x05\x06", b"alpha")
    data = container.pack(header, payload)
    assert data[:4] == b"VAEZ"
    assert container.unpack(data) == (header, payload)


def test_valid_file_parses(small_vaez):
    header, payload = container.unpack(small_vaez)
    assert (header.width, header.height, header.mode, header.quality) == (16, 16, "RGB", 4.0)
    assert small_vaez[4] == container.FORMAT_VERSION
    assert len(payload.stream) > 0 and len(payload.stream) % 4 == 0
    assert payload.alpha == b""


@pytest.mark.parametrize("fixture", ["small_vaez", "small_rgba_vaez"])
@pytest.mark.parametrize("xor", [0xFF, 0x01])
def test_every_header_byte_corruption_is_refused(codec, request, fixture, xor):
    data = request.getfixturevalue(fixture)
    end = _header_len(data)
    assert end > container._FIXED.size + 5 + 4 - 1
    for i in range(end):
        bad = bytearray(data)
        bad[i] ^= xor
        err = _refused(codec, bytes(bad))
        if i == 4:
            assert isinstance(err, UnsupportedFileError)
        else:
            assert isinstance(err, CorruptFileError), i


def test_every_truncation_is_refused(codec, small_rgba_vaez):
    for n in range(len(small_rgba_vaez)):
        err = _refused(codec, small_rgba_vaez[:n])
        assert isinstance(err, CorruptFileError), n


def test_payload_corruption_fails_checksum(codec, small_vaez, small_rgba_vaez):
    for data in (small_vaez, small_rgba_vaez):
        start = _header_len(data)
        for i in sorted({start, start + 1, (start + len(data)) // 2, len(data) - 1}):
            bad = bytearray(data)
            bad[i] ^= 0x10
            with pytest.raises(CorruptFileError, match="checksum"):
                codec.decompress(bytes(bad))
            with pytest.raises(CorruptFileError, match="checksum"):
                Codec.info(bytes(bad))


@pytest.mark.parametrize("extra", [b"\x00", b"garbage", b"VAEZ" * 10])
def test_trailing_garbage(codec, small_vaez, extra):
    with pytest.raises(CorruptFileError, match="trailing"):
        codec.decompress(small_vaez + extra)


def test_not_a_vaez_file(codec):
    for data in (b"", b"VAE", b"\x89PNG\r\n\x1a\n" + bytes(40), bytes(100)):
        with pytest.raises(CorruptFileError, match="not a .vaez"):
            codec.decompress(data)


def test_newer_format_version(codec, small_vaez):
    bad = bytearray(small_vaez)
    bad[4] = container.FORMAT_VERSION + 1
    bad = _recrc(bad)
    with pytest.raises(UnsupportedFileError, match=f"version {container.FORMAT_VERSION + 1}"):
        codec.decompress(bad)
    with pytest.raises(UnsupportedFileError):
        Codec.info(bad)


@pytest.mark.parametrize("version", [1, 2])
def test_pre_release_formats_are_refused(codec, small_vaez, version):
    """Formats 1 (before the Wiener filter) and 2 (before the symbols' checksum) were never
    released: refused, never guessed at."""
    old = bytearray(small_vaez)
    old[4] = version
    with pytest.raises(UnsupportedFileError, match="pre-release"):
        codec.decompress(_recrc(old))


def test_unknown_mode_byte(codec, small_vaez):
    bad = bytearray(small_vaez)
    bad[13] = len(container.MODES)
    with pytest.raises(CorruptFileError, match="colour mode"):
        codec.decompress(_recrc(bad))


def test_alpha_stream_must_match_mode(codec, small_vaez, small_rgba_vaez):
    header, payload = container.unpack(small_vaez)
    with pytest.raises(CorruptFileError, match="alpha"):
        codec.decompress(container.pack(header, dataclasses.replace(payload, alpha=b"x")))
    header, payload = container.unpack(small_rgba_vaez)
    with pytest.raises(CorruptFileError, match="alpha"):
        codec.decompress(container.pack(header, dataclasses.replace(payload, alpha=b"")))


def test_damaged_alpha_plane_with_valid_crc(codec, small_rgba_vaez):
    header, payload = container.unpack(small_rgba_vaez)
    for alpha in (b"not a png", payload.alpha[: len(payload.alpha) // 2]):
        with pytest.raises(CorruptFileError, match="alpha"):
            codec.decompress(container.pack(header, dataclasses.replace(payload, alpha=alpha)))
    # alpha PNG of the wrong size
    other = container.unpack(codec.compress(np.zeros((8, 8, 4), np.uint8), 1))[1].alpha
    with pytest.raises(CorruptFileError, match="alpha"):
        codec.decompress(container.pack(header, dataclasses.replace(payload, alpha=other)))


def test_alpha_decompression_bomb_is_corruption(codec, small_rgba_vaez):
    header, payload = container.unpack(small_rgba_vaez)
    bomb = container.pack(header, dataclasses.replace(payload, alpha=png_header_only(20000, 20000)))
    with pytest.raises(CorruptFileError):
        codec.decompress(bomb)


def test_alpha_broken_png_chunk_is_corruption(codec, small_rgba_vaez):
    header, payload = container.unpack(small_rgba_vaez)
    at = payload.alpha.index(b"IDAT") - 4
    broken = payload.alpha[:at] + bytes(4) + payload.alpha[at + 4 :]  # IDAT length -> 0
    with pytest.raises(CorruptFileError, match="alpha"):
        codec.decompress(container.pack(header, dataclasses.replace(payload, alpha=broken)))


def test_absurd_size_refused_before_decoding(codec, small_vaez, monkeypatch):
    header, payload = container.unpack(small_vaez)

    def must_not_run(*args, **kwargs):
        raise AssertionError("entropy decoding started for an absurd image size")

    monkeypatch.setattr(Codec, "_decode", must_not_run)
    monkeypatch.setattr(container, "Payload", must_not_run)  # unpack must fail before building one
    for w, h in [(65535, 65535), (65535, 2048), (0, 16), (16, 0), (70000, 1)]:
        data = container.pack(dataclasses.replace(header, width=w, height=h), payload)
        with pytest.raises(CorruptFileError, match="size|pixel"):
            codec.decompress(data)


def test_overlong_header_varint(codec, small_vaez):
    head = small_vaez[: container._FIXED.size]
    with pytest.raises(CorruptFileError, match="header"):
        codec.decompress(head + b"\xff" * 5 + b"\x01" + bytes(20))


@pytest.mark.parametrize("quality", [0.0, 0.5, 10.5, 655.35])
def test_quality_out_of_range_in_header(codec, small_vaez, quality):
    header, payload = container.unpack(small_vaez)
    data = container.pack(dataclasses.replace(header, quality=quality), payload)
    with pytest.raises(CorruptFileError):
        container.unpack(data)


def test_fuzzed_payload_with_valid_crc(codec, small_vaez):
    """Payload damage that the CRC cannot see (CRC recomputed) yields a VaecodecError or an image."""
    header, payload = container.unpack(small_vaez)
    rng = np.random.default_rng(123)
    outcomes = set()
    for trial in range(60):
        stream, escapes = bytearray(payload.stream), bytearray(payload.escapes)
        if trial % 3 == 0:
            stream[int(rng.integers(len(stream)))] ^= int(rng.integers(1, 256))
        elif trial % 3 == 1:
            stream = stream[: 4 * int(rng.integers(0, len(stream) // 4))]
        else:
            escapes = bytearray(rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes())
        data = container.pack(header, container.Payload(bytes(stream), bytes(escapes), b""))
        try:
            img = codec.decompress(data)
        except (CorruptFileError, UnsupportedFileError) as exc:
            outcomes.add(type(exc))
        else:
            assert img.size == (16, 16)
    assert CorruptFileError in outcomes


# ---- files from another model -----------------------------------------------------------------


@pytest.fixture(scope="module")
def other_model(codec, tmp_path_factory):
    w = weights.read(weights.resolve(None))
    tensors = dict(w.tensors)
    tensors["g_s.0.bias"] = tensors["g_s.0.bias"] * (1 + 1e-3) + 1e-4
    path = tmp_path_factory.mktemp("models") / "other.safetensors"
    weights.write(path, w.config, tensors)
    return path


def test_file_from_another_model(codec, make_image, other_model):
    other = Codec(str(other_model), device="cpu")
    assert other.model.model_id != codec.model.model_id
    img = make_image(16, 24)
    data = other.compress(img, 5)
    assert Codec.info(data)[0].model_id == other.model.model_id
    with pytest.raises(UnsupportedFileError) as info:
        codec.decompress(data)
    # the error names the model the file needs and the one this codec has
    for model_id in (other.model.model_id, codec.model.model_id):
        assert model_id.hex() in str(info.value)
    assert codec.model.name in str(info.value)
    assert other.decompress(data).size == (24, 16)  # fine with the right model
    res = codec.decompress_batch([data, codec.compress(img, 5)], on_error="return")
    assert isinstance(res[0], UnsupportedFileError) and res[1].size == (24, 16)


def test_rewritten_weights_keep_model_id(codec, tmp_path):
    w = weights.read(weights.resolve(None))
    path = tmp_path / "same.safetensors"
    assert weights.write(path, w.config, w.tensors) == codec.model.model_id
    assert Codec(str(path), device="cpu").model.model_id == codec.model.model_id


def test_not_a_weights_file(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"not a weights file")
    with pytest.raises(VaecodecError, match="not an intact vaecodec weights file"):
        Codec(str(path), device="cpu")
