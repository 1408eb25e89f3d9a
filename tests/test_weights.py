"""Weights files: compressed storage and decode-only (retired) models keep their model ids, and a
damaged file is refused rather than decoded into garbage."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from vaecodec import Codec
from vaecodec.errors import VaecodecError
from vaecodec.model import ModelConfig, VAEModel
from vaecodec.train import main as train_main
from vaecodec.weights import (
    _pack,
    _unpack,
    export_model,
    init_from_weights,
    load_model,
    read_weights,
    retire_encoder,
    save_weights,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("w") / "tiny.pt"
    export_model(VAEModel(ModelConfig(n=8, m=16)).eval(), path)
    return path


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_decode_only_file_keeps_the_decoder_bit_for_bit(tiny, tmp_path):
    """Plain tensors in a model that compresses (it loads on every run), zlib in a retired one."""
    retired = tmp_path / "r.pt"
    retire_encoder(tiny, retired)
    assert "storage" not in torch.load(tiny, weights_only=True)
    assert torch.load(retired, weights_only=True)["storage"] == "zlib-planes"
    a, b = load_model(tiny), load_model(retired)
    assert a.model_id == b.model_id
    assert all(_states_equal(getattr(a, part), getattr(b, part)) for part in ("g_s", "h_s", "gains"))
    for coder in ("z_coder", "y_coder"):
        ta, tb = getattr(a, coder).tables, getattr(b, coder).tables
        assert all(np.array_equal(getattr(ta, k), getattr(tb, k)) for k in ("offsets", "lengths", "pmfs"))


def test_a_retired_model_decodes_its_files_and_refuses_new_ones(tiny, tmp_path, make_image):
    full = Codec(str(tiny), device="cpu")
    data = full.compress(make_image(40, 56, seed=2), 5)
    retired = tmp_path / "tiny.pt"
    assert retire_encoder(tiny, retired) == full.model.model_id
    m = load_model(retired)
    assert m.g_a is None and m.h_a is None and m.model_id == full.model.model_id
    assert retired.stat().st_size < 0.8 * tiny.stat().st_size

    codec = Codec(str(retired), device="cpu")
    got, expected = codec.decode_integers(data), full.decode_integers(data)
    assert all(np.array_equal(got[k], expected[k]) for k in expected)
    assert np.array_equal(np.asarray(codec.decompress(data)), np.asarray(full.decompress(data)))
    with pytest.raises(VaecodecError, match="tiny is decode-only"):
        codec.compress(make_image(16, 16), 5)
    with pytest.raises(ValueError, match="decode-only"):
        init_from_weights(retired)
    # retiring a decode-only file again re-stores it: the same id and the same decoder
    assert retire_encoder(retired, tmp_path / "again.pt") == full.model.model_id
    again = Codec(str(tmp_path / "again.pt"), device="cpu")
    assert np.array_equal(np.asarray(again.decompress(data)), np.asarray(full.decompress(data)))


def test_train_retire_rewrites_in_place(tiny, tmp_path, capsys):
    path = tmp_path / "w.pt"
    path.write_bytes(tiny.read_bytes())
    train_main(["--retire", str(path)])
    assert load_model(path).g_a is None
    assert load_model(path).model_id.hex() in capsys.readouterr().out
    before = path.read_bytes()
    train_main(["--retire", str(path)])  # a decode-only file is re-stored, unchanged
    assert path.read_bytes() == before


def test_a_damaged_decode_only_file_is_refused(tiny, tmp_path):
    """Its id is stored, not computed, so the digest of the kept tensors is what catches damage."""
    retired = tmp_path / "r.pt"
    retire_encoder(tiny, retired)
    blob = torch.load(retired, weights_only=True)
    bias = _unpack({"b": blob["tensors"]["g_s.0.bias"]})["b"].clone()
    bias[0] += 1  # a valid, well-formed tensor with one changed value
    blob["tensors"]["g_s.0.bias"] = _pack({"b": bias})["b"]
    torch.save(blob, tmp_path / "changed.pt")
    with pytest.raises(ValueError, match="digest mismatch"):
        load_model(tmp_path / "changed.pt")

    blob = torch.load(retired, weights_only=True)
    stream = blob["tensors"]["g_s.0.weight"]["zlib"]
    stream[len(stream) // 2] ^= 0xFF  # a damaged compressed stream
    torch.save(blob, tmp_path / "flipped.pt")
    with pytest.raises(ValueError, match="damaged vaecodec weights file"):
        load_model(tmp_path / "flipped.pt")


def test_a_full_file_missing_its_encoder_is_damaged_not_decode_only(tiny, tmp_path):
    """Only a file written decode-only (with its stored id) may lack g_a; anywhere else a missing
    tensor is damage."""
    blob = torch.load(tiny, weights_only=True)
    for name in [k for k in blob["tensors"] if k.startswith("g_a.")]:
        del blob["tensors"][name]
    torch.save(blob, tmp_path / "no_g_a.pt")
    with pytest.raises(ValueError, match="damaged vaecodec weights file"):
        load_model(tmp_path / "no_g_a.pt")


def test_files_of_the_earlier_zlib_storage_still_load(tiny, tmp_path):
    """Decode-only files written before the byte planes (storage "zlib") load to the same model."""
    retired = tmp_path / "r.pt"
    retire_encoder(tiny, retired)
    blob = torch.load(retired, weights_only=True)
    old = {}
    for name, t in _unpack(blob["tensors"]).items():
        rec = _pack({name: t})[name]
        rec["zlib"] = torch.frombuffer(bytearray(zlib.compress(t.contiguous().numpy().tobytes())),
                                       dtype=torch.uint8)
        old[name] = rec
    torch.save({**blob, "storage": "zlib", "tensors": old}, tmp_path / "old.pt")
    a, b = load_model(retired), load_model(tmp_path / "old.pt")
    assert a.model_id == b.model_id and _states_equal(a.g_s, b.g_s) and _states_equal(a.h_s, b.h_s)
    torch.save({**blob, "storage": "zstd-2031"}, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="storage 'zstd-2031', which this vaecodec does not know"):
        load_model(tmp_path / "future.pt")


@pytest.fixture()
def successor(tiny, tmp_path) -> tuple[Path, Path]:
    """(old, new) beside each other: new is old with g_s changed, as a fine-tune with h_s, the
    context and the z density frozen would leave it."""
    old, new = tmp_path / "old.pt", tmp_path / "new.pt"
    old.write_bytes(tiny.read_bytes())
    config, tensors, _ = read_weights(tiny)
    tensors = dict(tensors)
    for name in [k for k in tensors if k.startswith("g_s.")]:
        tensors[name] = tensors[name] * 1.01
    save_weights(config, tensors, new)
    return old, new


def test_a_retired_model_borrows_what_its_successor_shares(successor, make_image):
    old, new = successor
    data = Codec(str(old), device="cpu").compress(make_image(40, 56, seed=3), 5)
    expected = np.asarray(Codec(str(old), device="cpu").decompress(data))
    size = old.stat().st_size
    alone = retire_encoder(old, old.with_name("alone.pt"))
    assert retire_encoder(old, old, share_with=new) == alone
    borrows = torch.load(old, weights_only=True)["borrows"]
    assert borrows["model"] == "new" and "hs.w0" in borrows["tensors"]
    g_s = sorted(k for k in read_weights(old)[1] if k.startswith("g_s."))
    assert not set(g_s) & set(borrows["tensors"])  # g_s differs: not borrowed ...
    # ... but stored as its XOR with the successor's where both store the same dtype (the unit
    # initial GDN parameters are float16-exact here, their successors' 1.01 are not: stored plain)
    assert set(borrows["xor"]) <= set(g_s)
    assert {k for k in g_s if k.endswith(".weight")} <= set(borrows["xor"])
    assert old.stat().st_size < 0.5 * old.with_name("alone.pt").stat().st_size < 0.5 * size
    assert np.array_equal(np.asarray(Codec(str(old), device="cpu").decompress(data)), expected)
    assert load_model(old).model_id == alone


def test_xor_storage_is_smaller_and_a_damaged_xor_is_refused(successor):
    """g_s scaled by 1.01 keeps most of each value's sign and exponent bits, which the XOR zeroes:
    the stored bits deflate to less than the plain values. Damage to them, or to the record naming
    them, is caught (the decoder digest over the restored values, or the record's own check)."""
    old, new = successor
    retire_encoder(old, old, share_with=new)
    blob = torch.load(old, weights_only=True)
    name = "g_s.0.weight"
    plain = _pack({name: read_weights(old)[1][name]})[name]["zlib"].numel()
    assert blob["tensors"][name]["zlib"].numel() < 0.8 * plain
    flipped = _unpack({name: blob["tensors"][name]})[name] ^ 1
    damaged = {**blob, "tensors": {**blob["tensors"], **_pack({name: flipped})}}
    torch.save(damaged, old)
    with pytest.raises(ValueError, match="decoder digest mismatch"):
        load_model(old)
    torch.save({**blob, "borrows": {**blob["borrows"], "xor": {name: "complex128"}}}, old)
    with pytest.raises(ValueError, match="damaged .*borrows"):
        load_model(old)


def test_a_borrower_whose_lender_is_gone_or_changed_is_refused(successor):
    old, new = successor
    retire_encoder(old, old, share_with=new)
    config, tensors, _ = read_weights(new)
    tensors = {**tensors, "hs.b0": tensors["hs.b0"] + 1}
    save_weights(config, tensors, new)  # another model under the lender's name
    with pytest.raises(ValueError, match="needs tensors of model new .* but .*new.pt is model"):
        load_model(old)
    new.unlink()
    with pytest.raises(ValueError, match="whose weights file .*new.pt is missing"):
        load_model(old)


def test_a_lender_is_read_once_per_process_until_its_bytes_change(successor, monkeypatch):
    """Finding an old file's model loads every shipped file, and each borrower reads its lender: the
    verified lender is kept, keyed by its bytes, so a replaced lender is read (and checked) again."""
    import vaecodec.weights as weights_module

    old, new = successor
    retire_encoder(old, old, share_with=new)
    reads = []
    real = weights_module.read_weights
    monkeypatch.setattr(weights_module, "_VERIFIED_LENDERS", {})
    monkeypatch.setattr(weights_module, "read_weights",
                        lambda path, *a, **k: reads.append(Path(path).name) or real(path, *a, **k))
    first, second = load_model(old), load_model(old)
    assert reads == ["old.pt", "new.pt", "old.pt"]
    assert first.model_id == second.model_id and _states_equal(first.g_s, second.g_s)
    config, tensors, _ = real(new)
    save_weights(config, {**tensors, "hs.b0": tensors["hs.b0"] + 1}, new)
    with pytest.raises(ValueError, match="needs tensors of model new .* but .*new.pt is model"):
        load_model(old)
    assert reads[-1] == "new.pt"


def test_borrowing_refuses_cycles_and_other_folders(successor, tmp_path):
    old, new = successor
    retire_encoder(old, old, share_with=new)
    with pytest.raises(ValueError, match="cycle"):
        retire_encoder(new, new, share_with=old)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(ValueError, match="not beside"):
        retire_encoder(new, elsewhere / "new.pt", share_with=old)
    with pytest.raises(ValueError, match="itself"):
        retire_encoder(new, new, share_with=new)


def test_finding_old_files_models_loads_each_shipped_model_once(successor, make_image, monkeypatch):
    """A file names its model by id, so the decoder loads shipped models until one matches; those it
    loaded on the way stay loaded, and the next file of another old model needs no new search."""
    import vaecodec.codec as codec_module

    old, new = successor
    pic = make_image(24, 24, seed=5)
    data = {p.stem: Codec(str(p), device="cpu").compress(pic, 5) for p in (old, new)}
    expected = {k: np.asarray(Codec(str(p), device="cpu").decompress(data[k])) for k, p in
                (("old", old), ("new", new))}
    codec = Codec(device="cpu")  # the default model
    loads = []
    real = codec_module.load_model
    monkeypatch.setattr(codec_module, "available_models", lambda: {"old": old, "new": new})
    monkeypatch.setattr(codec_module, "load_model", lambda path: loads.append(Path(path).stem) or real(path))
    assert np.array_equal(np.asarray(codec.decompress(data["new"])), expected["new"])
    assert np.array_equal(np.asarray(codec.decompress(data["old"])), expected["old"])
    assert loads == ["old", "new"]


def test_a_file_whose_model_cannot_load_says_why(successor, make_image, monkeypatch):
    """The decoder looks for a file's model among the shipped ones; one that does not load (its
    lender is gone) is named in the error with the reason, not silently passed over."""
    import vaecodec.codec as codec_module
    from vaecodec.errors import UnsupportedFileError

    old, new = successor
    data = Codec(str(old), device="cpu").compress(make_image(24, 24, seed=4), 5)
    retire_encoder(old, old, share_with=new)
    new.unlink()
    codec = Codec(device="cpu")  # the default model
    monkeypatch.setattr(codec_module, "available_models", lambda: {"old": old})
    with pytest.raises(UnsupportedFileError, match="old does not load: .*new.pt is missing"):
        codec.decompress(data)
