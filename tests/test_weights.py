"""The weights file (one safetensors file): export is deterministic, tensors are stored compact, the
model id is a hash of the content that every read checks, so any damage is refused in one line."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from training.export import export_model
from training.model import ModelConfig, VAEModel
from vaecodec import Codec, weights
from vaecodec.errors import UnsupportedFileError, VaecodecError

SHIPPED_ID = "a15fa4a61d4fdfa7"


@pytest.fixture(scope="module")
def tiny_model() -> VAEModel:
    torch.manual_seed(5)
    model = VAEModel(ModelConfig(n=8, m=16, context="checkerboard")).eval()
    with torch.no_grad():  # float16-exact values, as weights trained in reduced precision have
        model.g_s[0].weight.copy_(model.g_s[0].weight.half().float())
    return model


@pytest.fixture(scope="module")
def tiny(tiny_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    export_model(tiny_model, path)
    return path


def header(path: Path) -> tuple[int, dict]:
    """(size, parsed JSON) of a safetensors file's header."""
    data = path.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    return size, json.loads(data[8 : 8 + size])


def refused(path: Path) -> str:
    """The one-line message of the VaecodecError that reading ``path`` raises."""
    with pytest.raises(VaecodecError) as info:
        weights.read(path)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message and info.value.__cause__ is None
    return message


def test_export_is_deterministic_and_the_id_stable(tiny, tiny_model, tmp_path):
    w = weights.read(tiny)
    assert w.name == "tiny" and w.config == tiny_model.config.to_dict()
    again = tmp_path / "again.safetensors"
    assert export_model(tiny_model, again) == w.model_id
    a, b = weights.read(tiny), weights.read(again)
    assert a.config == b.config and a.tensors.keys() == b.tensors.keys()
    assert all(np.array_equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    # re-exported from the file's own values (float32 now, float16 where they were): the same id
    from training.export import init_from_weights, tables_from_state

    ckpt = init_from_weights(tiny)
    rebuilt = VAEModel(tiny_model.config)
    rebuilt.load_state_dict(ckpt["model"])
    assert export_model(rebuilt, tmp_path / "rebuilt.safetensors", tables_from_state(ckpt["z_tables"])) \
        == w.model_id


def test_tensors_are_stored_compact(tiny):
    _, head = header(tiny)
    dtypes = {k: v["dtype"] for k, v in head.items() if k != "__metadata__"}
    assert all(dtypes[k] == "I16" for k in dtypes if k.startswith(("hs.w", "ctx.w")))
    tensors = weights.read(tiny).tensors
    for name, dtype in dtypes.items():
        value = tensors[name]
        if value.dtype.kind == "f":  # float16 exactly where every value is a float16
            exact = np.array_equal(value.astype(np.float16).astype(np.float32), value)
            assert dtype == ("F16" if exact else "F32"), name
    assert dtypes["g_s.0.weight"] == "F16" and dtypes["g_a.0.weight"] == "F32"
    assert head["__metadata__"]["format"] == weights.FORMAT


def test_every_header_byte_changed_is_refused(tiny, tmp_path):
    data = tiny.read_bytes()
    size, _ = header(tiny)
    damaged = tmp_path / "damaged.safetensors"
    for i in range(8 + size):
        changed = bytearray(data)
        changed[i] ^= 0x01
        damaged.write_bytes(changed)
        refused(damaged)


def test_data_bytes_changed_are_refused(tiny, tmp_path):
    """The first and last byte of every tensor, and a stride through all of them."""
    data = tiny.read_bytes()
    size, head = header(tiny)
    start = 8 + size
    positions = {start + o for v in head.values() if "data_offsets" in v
                 for o in (v["data_offsets"][0], v["data_offsets"][1] - 1)}
    positions |= set(range(start, len(data), 97))
    damaged = tmp_path / "damaged.safetensors"
    for i in sorted(positions):
        changed = bytearray(data)
        changed[i] ^= 0x80
        damaged.write_bytes(changed)
        assert "damaged vaecodec weights file" in refused(damaged), i


def test_header_changes_a_lenient_parser_lets_through_are_refused(tiny, tmp_path):
    """Single-byte changes that leave the header valid JSON with the same values: the id in upper
    case, a signed dtype read as unsigned (the same values where none is negative), and other
    whitespace in the header's padding. Each still changes the file, so each must be refused."""
    data = tiny.read_bytes()
    size, head = header(tiny)
    text = data[8 : 8 + size]
    changes = []
    model_id = head["__metadata__"]["model_id"].encode()
    at = text.index(model_id)
    changes += [(8 + at + j, c - 32) for j, c in enumerate(model_id) if chr(c) in "abcdef"]
    for name, v in head.items():
        if name != "__metadata__":
            at = text.index(b'"dtype":"%s"' % v["dtype"].encode(), text.index(b'"%s":' % name.encode()))
            first = 8 + at + len(b'"dtype":"')
            changes += [(first, ord(c)) for c in "IUF" if ord(c) != data[first]]
    padding = len(text) - len(text.rstrip(b" "))
    changes += [(8 + size - 1 - j, ord(c)) for j in range(padding) for c in "\t\n\r"]
    assert changes
    damaged = tmp_path / "damaged.safetensors"
    accepted = []
    for i, value in changes:
        changed = bytearray(data)
        changed[i] = value
        damaged.write_bytes(changed)
        try:
            weights.read(damaged)
            accepted.append(f"byte {i}: {chr(data[i])!r} -> {chr(value)!r}")
        except VaecodecError:
            pass
    assert not accepted, f"{len(accepted)} changed files read as intact, e.g. {accepted[:3]}"


def test_truncated_and_foreign_files_are_refused(tiny, tmp_path):
    data = tiny.read_bytes()
    size, _ = header(tiny)
    cut = tmp_path / "cut.safetensors"
    for length in (0, 4, 8 + size // 2, 8 + size, len(data) - 1):
        cut.write_bytes(data[:length])
        refused(cut)
    (tmp_path / "png.safetensors").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    refused(tmp_path / "png.safetensors")
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(3, np.float32)}, tmp_path / "other.safetensors", metadata={"format": "pt"})
    assert "not an intact vaecodec weights file" in refused(tmp_path / "other.safetensors")
    refused(tmp_path / "missing.safetensors")


def test_a_codec_refuses_files_of_another_model(tiny, small_vaez, codec):
    mine = Codec(model=tiny, device="cpu")
    with pytest.raises(UnsupportedFileError) as info:
        mine.decompress(small_vaez)
    message = str(info.value)
    assert codec.model.model_id.hex() in message and mine.model.model_id.hex() in message


def test_the_shipped_weights():
    w = weights.read(weights.resolve(None))
    assert w.name == weights.DEFAULT_MODEL and w.model_id.hex() == SHIPPED_ID
    assert w.config["n"] == 128 and w.config["m"] == 192
    assert w.config["context"] == "checkerboard" and w.config["postfilter"] == 16
