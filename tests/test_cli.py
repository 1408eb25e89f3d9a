"""Command line: outputs, overwrite protection, batches with failures, and clean one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import vaecodec
from vaecodec import Codec, cli, container
from vaecodec.cli import main


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args):
        result = runner.invoke(main, [str(a) for a in args])
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert "Traceback" not in result.output
        return result

    return invoke


def _clean_error(result, *needles: str) -> None:
    assert result.exit_code != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("vaecodec: error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0]


@pytest.fixture
def png(tmp_path, make_image):
    """Factory: png(name, mode="RGB", size=(w, h)) -> path of a synthetic PNG in tmp_path."""

    def make(name: str, mode: str = "RGB", size: tuple[int, int] = (24, 16)) -> Path:
        w, h = size
        img = Image.fromarray(make_image(h, w, seed=len(name)))
        if mode == "RGBA":
            img.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))))
        elif mode != "RGB":
            img = img.convert(mode)
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
        return path

    return make


def test_version(run):
    result = run("--version")
    assert result.exit_code == 0
    assert vaecodec.__version__ in result.stdout


def test_compress_decompress_force(run, png, tmp_path):
    src = png("in/photo.png", "RGBA")
    result = run("compress", src, "-q", "5")
    assert result.exit_code == 0, result.output
    vaez = src.with_suffix(".vaez")
    assert vaez.is_file()
    summary = result.stdout.strip().splitlines()
    assert len(summary) == 1 and "bpp" in summary[0] and "24x16" in summary[0]

    # decompressing next to the original would overwrite photo.png: refused without --force
    original = src.read_bytes()
    result = run("decompress", vaez)
    _clean_error(result, "--force")
    assert src.read_bytes() == original

    result = run("decompress", vaez, "--force")
    assert result.exit_code == 0, result.output
    assert src.read_bytes() != original
    with Image.open(src) as out:
        assert (out.mode, out.size) == ("RGBA", (24, 16))
    assert sorted(p.name for p in src.parent.iterdir()) == ["photo.png", "photo.vaez"]  # no temp files

    # compressing again without --force is refused too, and keeps the file
    coded = vaez.read_bytes()
    result = run("compress", src, "-q", "1")
    _clean_error(result, "--force")
    assert vaez.read_bytes() == coded
    assert run("compress", src, "-q", "1", "--force").exit_code == 0
    assert vaez.read_bytes() != coded


@pytest.mark.parametrize("mode", ["RGB", "L", "LA"])
def test_decompress_keeps_size_and_mode(run, png, tmp_path, mode):
    src = png("src.png", mode, size=(19, 13))
    out_vaez, out_png = tmp_path / "coded.vaez", tmp_path / "decoded.png"
    assert run("compress", src, "-o", out_vaez).exit_code == 0
    result = run("decompress", out_vaez, "-o", out_png)
    assert result.exit_code == 0, result.output
    assert f"19x13 {mode}" in result.stdout
    with Image.open(out_png) as out:
        assert (out.mode, out.size) == (mode, (19, 13))


def test_output_folder_with_several_inputs(run, png, tmp_path):
    srcs = [png(f"s{i}.png", size=(8 + i, 8)) for i in range(3)]
    folder = tmp_path / "coded"
    folder.mkdir()
    result = run("compress", *srcs, "-o", folder)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == ["s0.vaez", "s1.vaez", "s2.vaez"]
    assert len(result.stdout.strip().splitlines()) == 3
    assert "3 of 3" in result.stderr

    decoded = tmp_path / "decoded"
    decoded.mkdir()
    result = run("decompress", *sorted(folder.iterdir()), "-o", decoded)
    assert result.exit_code == 0, result.output
    for i in range(3):
        with Image.open(decoded / f"s{i}.png") as out:
            assert out.size == (8 + i, 8)


def test_several_inputs_need_existing_folder(run, png, tmp_path):
    srcs = [png("a.png"), png("b.png")]
    result = run("compress", *srcs, "-o", tmp_path / "nope")
    assert result.exit_code == 2
    assert "folder" in result.stderr
    assert not (tmp_path / "nope").exists() and not (tmp_path / "a.vaez").exists()


def test_info(run, png, codec, tmp_path):
    src = png("i.png", "RGBA", size=(21, 11))
    assert run("compress", src, "-q", "3.5").exit_code == 0
    result = run("info", src.with_suffix(".vaez"))
    assert result.exit_code == 0, result.output
    line = result.stdout.strip()
    assert "21x11 RGBA" in line
    assert "quality 3.5" in line
    assert f"model {codec.model.model_id.hex()}" in line
    assert f"{src.with_suffix('.vaez').stat().st_size} bytes" in line


def test_info_corrupt(run, png, tmp_path):
    src = png("c.png")
    assert run("compress", src).exit_code == 0
    vaez = src.with_suffix(".vaez")
    vaez.write_bytes(vaez.read_bytes()[:-3])
    _clean_error(run("info", vaez), "truncated")


def test_missing_input(run, tmp_path):
    missing = tmp_path / "missing.png"
    result = run("compress", missing)
    _clean_error(result, "missing.png")
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert not missing.with_suffix(".vaez").exists()
    result = run("decompress", tmp_path / "missing.vaez")
    _clean_error(result, "missing.vaez")
    assert len(result.stderr.strip().splitlines()) == 1


def test_non_image_input(run, tmp_path):
    fake = tmp_path / "x.png"
    fake.write_text("hello, I am text\n")
    result = run("compress", fake)
    _clean_error(result, "x.png")
    assert result.exit_code == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]


def test_batch_with_bad_middle_file(run, png, tmp_path):
    good1, good2 = png("one.png"), png("three.png")
    bad = tmp_path / "two.png"
    bad.write_bytes(b"\x89PNG but not really")
    result = run("compress", good1, bad, good2)
    assert result.exit_code == 1
    assert good1.with_suffix(".vaez").is_file() and good2.with_suffix(".vaez").is_file()
    assert not bad.with_suffix(".vaez").exists()
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("vaecodec: error:")]
    assert len(errors) == 1 and "two.png" in errors[0]
    assert "2 of 3" in result.stderr



def _decompress_batch_with_bad_middle(run, png, tmp_path):
    goods = [png("one.png"), png("three.png")]
    for good in goods:
        assert run("compress", good).exit_code == 0
    bad_vaez = tmp_path / "two.vaez"
    bad_vaez.write_bytes(goods[0].with_suffix(".vaez").read_bytes()[:-1])
    out = tmp_path / "out"
    out.mkdir()
    first, last = (g.with_suffix(".vaez") for g in goods)
    result = run("decompress", first, bad_vaez, last, "-o", out)
    return result, out


def test_decompress_batch_with_bad_middle_file(run, png, tmp_path):
    result, out = _decompress_batch_with_bad_middle(run, png, tmp_path)
    assert result.exit_code == 1
    assert sorted(p.name for p in out.iterdir()) == ["one.png", "three.png"]
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("vaecodec: error:")]
    assert len(errors) == 1 and "truncated" in errors[0]
    assert "2 of 3" in result.stderr


def test_decompress_error_names_the_bad_file(run, png, tmp_path):
    result, _ = _decompress_batch_with_bad_middle(run, png, tmp_path)
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("vaecodec: error:")]
    assert len(errors) == 1
    assert "two.vaez" in errors[0], errors[0]


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_decompress_corrupt_file(run, png, tmp_path, damage):
    src = png("d.png")
    vaez = tmp_path / "d.vaez"
    assert run("compress", src, "-o", vaez).exit_code == 0
    data = bytearray(vaez.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[-2] ^= 0x40
    else:
        data = bytearray(b"garbage" * 10)
    vaez.write_bytes(bytes(data))
    out = tmp_path / "decoded.png"
    result = run("decompress", vaez, "-o", out)
    _clean_error(result)
    assert result.exit_code == 1
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.png", "d.vaez"]


def test_decompress_alpha_to_jpeg_refused(run, png, tmp_path):
    src = png("t.png", "RGBA")
    assert run("compress", src).exit_code == 0
    out = tmp_path / "t.jpg"
    _clean_error(run("decompress", src.with_suffix(".vaez"), "-o", out), "alpha")
    assert not out.exists()
    _clean_error(run("decompress", src.with_suffix(".vaez"), "-o", tmp_path / "t.xyz"), "extension")


@pytest.mark.parametrize("q", ["0", "0.5", "10.5", "11", "abc"])
def test_quality_out_of_range_is_usage_error(run, png, q):
    src = png("q.png")
    result = run("compress", src, "-q", q)
    assert result.exit_code == 2
    assert "quality" in result.stderr.lower()
    assert not src.with_suffix(".vaez").exists()


def test_fractional_quality_stored(run, png):
    src = png("f.png")
    assert run("compress", src, "--quality", "6.75").exit_code == 0
    assert Codec.info(src.with_suffix(".vaez"))[0].quality == 6.75


def test_unknown_model_option(run, png):
    src = png("m.png")
    result = run("compress", src, "--model", "no-such-model")
    _clean_error(result, "no-such-model")
    assert not src.with_suffix(".vaez").exists()


def test_models_lists_the_shipped_model_verified(run):
    from vaecodec import weights

    result = run("models")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert len(lines) == len(weights.shipped()) == 1
    w = weights.read(weights.resolve(None))
    assert lines[0].startswith(f"{weights.DEFAULT_MODEL} (default): model {w.model_id.hex()}")


def test_16bit_warning_goes_to_stderr(run, tmp_path):
    src = tmp_path / "g16.png"
    Image.fromarray(np.tile(np.linspace(0, 65535, 20), (10, 1)).astype(np.uint16)).save(src)
    result = run("compress", src)
    assert result.exit_code == 0
    assert "warning" in result.stderr and "16-bit" in result.stderr
    assert "bpp" in result.stdout


# ---- the console-script wrapper ---------------------------------------------------------------


def _entry(monkeypatch, *args) -> int:
    monkeypatch.setattr(sys, "argv", ["vaecodec", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        cli.entry()
    return info.value.code


def test_entry_success_and_user_error(monkeypatch, capsys, png, tmp_path):
    src = png("e.png")
    assert _entry(monkeypatch, "compress", src) == 0
    assert src.with_suffix(".vaez").is_file()
    assert _entry(monkeypatch, "compress", tmp_path / "nope.png") == 1
    err = capsys.readouterr().err
    assert "vaecodec: error:" in err and "nope.png" in err and "Traceback" not in err


def test_entry_internal_error_is_one_line(monkeypatch, capsys, png):
    src = png("bug.png")

    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(Codec, "compress", broken)
    monkeypatch.delenv("VAECODEC_DEBUG", raising=False)
    assert _entry(monkeypatch, "compress", src) == 70
    err = capsys.readouterr().err
    assert "internal error" in err and "simulated bug" in err and "Traceback" not in err
    assert not src.with_suffix(".vaez").exists()

    monkeypatch.setenv("VAECODEC_DEBUG", "1")
    monkeypatch.setattr(sys, "argv", ["vaecodec", "compress", str(src)])
    with pytest.raises(RuntimeError, match="simulated bug"):
        cli.entry()


def test_entry_usage_error(monkeypatch, capsys):
    assert _entry(monkeypatch, "compress") == 2
    assert "Usage" in capsys.readouterr().err


def test_effort_option(run, png):
    src = png("e.png")
    assert run("compress", src, "--effort", "1").exit_code == 0
    assert run("decompress", src.with_suffix(".vaez"), "-o", src.with_name("e.out.png")).exit_code == 0
    result = run("compress", src, "-e", "3", "--force")
    assert result.exit_code == 2
    assert "effort" in result.stderr.lower()


def test_no_filter_option_writes_a_file_without_one(run, png):
    src = png("nf.png", size=(256, 192))
    assert run("compress", src, "-q", "5").exit_code == 0
    with_filter = container.unpack(src.with_suffix(".vaez").read_bytes())[1].filter
    assert run("compress", src, "-q", "5", "--no-filter", "--force").exit_code == 0
    assert with_filter and container.unpack(src.with_suffix(".vaez").read_bytes())[1].filter == b""
