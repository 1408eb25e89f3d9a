"""Command line: outputs, overwrite protection, batches with failures, and clean one-line errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vaecodec
from vaecodec import Codec, cli, container


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


def test_round_trip_without_force_keeps_the_original(run, png, tmp_path):
    src = png("in/photo.png", "RGBA")
    original = src.read_bytes()
    result = run("compress", src, "-q", "5")
    assert result.exit_code == 0, result.output
    vaez = src.with_suffix(".vaez")
    assert vaez.is_file()
    summary = result.stdout.strip().splitlines()
    assert len(summary) == 1 and "bpp" in summary[0] and "24x16" in summary[0] and "quality 5" in summary[0]

    # decompress writes <stem>.decoded.png beside the input: never the original's name, no --force needed
    result = run("decompress", vaez)
    assert result.exit_code == 0, result.output
    assert src.read_bytes() == original
    decoded = src.with_name("photo.decoded.png")
    with Image.open(decoded) as out:
        assert (out.mode, out.size) == ("RGBA", (24, 16))
    assert sorted(p.name for p in src.parent.iterdir()) == ["photo.decoded.png", "photo.png", "photo.vaez"]

    # doing either again is refused without --force, and keeps the files
    first = decoded.read_bytes()
    _clean_error(run("decompress", vaez), "--force")
    assert decoded.read_bytes() == first
    coded = vaez.read_bytes()
    _clean_error(run("compress", src, "-q", "1"), "--force")
    assert vaez.read_bytes() == coded
    assert run("compress", src, "-q", "1", "--force").exit_code == 0
    assert vaez.read_bytes() != coded
    assert run("decompress", vaez, "--force").exit_code == 0
    assert decoded.read_bytes() != first
    assert src.read_bytes() == original
    assert len(list(src.parent.iterdir())) == 3  # no temp files


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


# ---- safe outputs ----------------------------------------------------------------------------


def _usage_error(result, *needles: str) -> None:
    _clean_error(result, *needles)
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_output_that_is_an_input_is_refused_even_with_force(run, png, tmp_path):
    src = png("a.png")
    assert run("compress", src).exit_code == 0
    vaez = src.with_suffix(".vaez")
    before = {p: p.read_bytes() for p in (src, vaez)}
    _usage_error(run("decompress", vaez, "-o", vaez, "--force"), "input")
    _usage_error(run("compress", src, "-o", src, "--force"), "input")
    link = tmp_path / "link.png"
    link.symlink_to(src)
    _usage_error(run("compress", src, "-o", link, "--force"), "input")  # resolves to the input
    # -o FOLDER/ names a.vaez's output a.png: an input of this run
    _usage_error(run("decompress", vaez, src, "-o", tmp_path, "--force"), "input", "a.png")
    assert {p: p.read_bytes() for p in (src, vaez)} == before
    assert _listing(tmp_path) == ["a.png", "a.vaez", "link.png"]


def test_two_inputs_one_output_refused_before_any_work(run, png, tmp_path):
    a_png = png("a.png")
    Image.open(a_png).save(tmp_path / "a.jpg")
    before = _listing(tmp_path)
    result = run("compress", a_png, tmp_path / "a.jpg", "--force")
    _usage_error(result, "a.png", "a.jpg", "a.vaez")
    assert _listing(tmp_path) == before

    b1, b2 = png("one/b.png"), png("two/b.png")
    before = _listing(tmp_path)
    _usage_error(run("compress", b1, b2, "-o", f"{tmp_path / 'out'}/", "--force"), str(b1), str(b2))
    assert _listing(tmp_path) == before  # the folder is not created either


def test_output_folder_with_trailing_slash_is_created(run, png, tmp_path):
    src = png("x.png")
    result = run("compress", src, "-o", f"{tmp_path / 'newdir'}/")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "newdir" / "x.vaez").is_file()
    result = run("decompress", tmp_path / "newdir" / "x.vaez", "-o", f"{tmp_path / 'dec' / 'sub'}/")
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "dec" / "sub" / "x.png") as out:
        assert out.size == (24, 16)
    # an existing folder without the slash is a folder too
    result = run("decompress", tmp_path / "newdir" / "x.vaez", "-o", tmp_path / "newdir")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "newdir" / "x.png").is_file()
    # -o naming an existing file with a slash is refused
    _usage_error(run("compress", src, "-o", f"{src}/"), "not a folder")


def test_compress_to_a_name_without_vaez_warns(run, png, tmp_path):
    src = png("w.png")
    out = tmp_path / "w.bin"
    result = run("compress", src, "-o", out)
    assert result.exit_code == 0, result.output
    warnings_ = [ln for ln in result.stderr.splitlines() if ln.startswith("vaecodec: warning:")]
    assert len(warnings_) == 1 and "w.bin" in warnings_[0] and ".vaez" in warnings_[0]
    assert len(result.stderr.strip().splitlines()) == 1
    assert run("decompress", out, "-o", tmp_path / "w.out.png").exit_code == 0


def test_lossy_decompress_warns_and_out_quality_sets_it(run, small_vaez, tmp_path):
    vaez = tmp_path / "l.vaez"
    vaez.write_bytes(small_vaez)
    sizes = {}
    for q in ("20", "95"):
        out = tmp_path / f"l{q}.jpg"
        result = run("decompress", vaez, "-o", out, "--out-quality", q)
        assert result.exit_code == 0, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("vaecodec: warning:") and "lossily" in lines[0], lines
        assert f"quality {q}" in lines[0] and "l.vaez" in lines[0]
        sizes[q] = out.stat().st_size
    assert sizes["20"] < sizes["95"]
    result = run("decompress", vaez, "-o", tmp_path / "l.out.png", "--out-quality", "50")  # lossless: says so
    assert result.exit_code == 0 and "no effect" in result.stderr
    assert run("decompress", vaez, "-o", tmp_path / "l0.jpg", "--out-quality", "0").exit_code == 2
    _usage_error(run("decompress", vaez, "-o", tmp_path / "l.webp", "--format", "png"), "--format")


# ---- pipes -------------------------------------------------------------------------------------


def test_pipes_through_stdin_and_stdout(run, png, codec, tmp_path):
    src = png("p.png", size=(24, 16))
    result = run("compress", "-", "-o", "-", "-q", "4", input=src.read_bytes())
    assert result.exit_code == 0, result.stderr
    data = result.stdout_bytes
    header, size = Codec.info(data)
    assert (header.width, header.height, header.quality, size) == (24, 16, 4, len(data))
    assert "bpp" in result.stderr and "<stdin> -> <stdout>" in result.stderr  # the summary goes to stderr

    result = run("decompress", "-", "-o", "-", input=data)
    assert result.exit_code == 0, result.stderr
    with Image.open(io.BytesIO(result.stdout_bytes)) as out:
        assert (out.format, out.size) == ("PNG", (24, 16))
    result = run("decompress", "-", "-o", "-", "--format", "webp", input=data)
    assert result.exit_code == 0, result.stderr
    with Image.open(io.BytesIO(result.stdout_bytes)) as out:
        assert (out.format, out.size) == ("WEBP", (24, 16))

    # stdin to a file and a file to stdout
    assert run("compress", "-", "-o", tmp_path / "p2.vaez", input=src.read_bytes()).exit_code == 0
    result = run("decompress", tmp_path / "p2.vaez", "-o", "-")
    assert result.exit_code == 0 and result.stdout_bytes.startswith(b"\x89PNG")
    assert run("info", "-", input=data).stdout.startswith("<stdin>: 24x16 RGB, quality 4")


def test_pipe_misuse_is_a_one_line_error(run, png, tmp_path):
    a, b = png("a.png"), png("b.png")
    _usage_error(run("compress", "-", input=a.read_bytes()), "-o")
    _usage_error(run("compress", a, b, "-o", "-"), "-o -")
    _usage_error(run("compress", "-", "-", "-o", "-", input=a.read_bytes()), "twice")
    _usage_error(run("compress", "-", a, "-o", f"{tmp_path / 'out'}/", input=a.read_bytes()), "stdin")
    _usage_error(run("compress", a, "-o", "-", "--json"), "--json")
    _clean_error(run("compress", "-", "-o", "-", input=b"not an image"), "<stdin>")
    assert _listing(tmp_path) == ["a.png", "b.png"]


def test_shell_pipeline(png, tmp_path):
    src = png("sh.png", size=(24, 16))
    out = tmp_path / "y.png"
    vaecodec_ = f"'{sys.executable}' -m vaecodec"
    pipeline = (f"cat '{src}' | {vaecodec_} compress - -o - -q 3 | {vaecodec_} decompress - -o - > '{out}'")
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], capture_output=True, text=True,
                          cwd=Path(__file__).parents[1], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("<stdin> -> <stdout>") == 2  # one summary line each, on stderr
    with Image.open(out) as img:
        assert (img.format, img.mode, img.size) == ("PNG", "RGB", (24, 16))


# ---- scripting ---------------------------------------------------------------------------------

_JSON_KEYS = ["input", "output", "bytes", "bpp", "quality", "width", "height", "seconds", "error"]


def test_json_one_object_per_file(run, png, tmp_path):
    good1, good2 = png("g1.png"), png("g2.png", size=(16, 8))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    result = run("compress", good1, bad, good2, "--json", "-q", "6")
    assert result.exit_code == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["input"] for r in records] == [str(good1), str(bad), str(good2)]
    for r in records:
        assert list(r) == _JSON_KEYS
    ok = records[2]
    assert ok["error"] is None and ok["output"] == str(tmp_path / "g2.vaez")
    assert (ok["width"], ok["height"], ok["quality"]) == (16, 8, 6)
    assert ok["bytes"] == (tmp_path / "g2.vaez").stat().st_size
    assert ok["bpp"] == pytest.approx(8 * ok["bytes"] / 128, abs=1e-4) and ok["seconds"] >= 0
    assert isinstance(records[1]["error"], str) and "bad.png" in records[1]["error"]
    assert records[1]["bytes"] is None
    assert "bad.png" in result.stderr  # the error is on stderr too

    result = run("decompress", tmp_path / "g1.vaez", "--json", "-o", tmp_path / "g1.out.png")
    assert result.exit_code == 0
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["error"] is None and record["output"] == str(tmp_path / "g1.out.png")
    assert (record["width"], record["height"], record["quality"]) == (24, 16, 6)
    assert record["bytes"] == (tmp_path / "g1.vaez").stat().st_size


def test_quiet_prints_only_errors(run, png, tmp_path):
    srcs = [png("q1.png"), png("q2.png")]
    result = run("compress", *srcs, "-Q")
    assert result.exit_code == 0
    assert result.stdout == "" and result.stderr == ""
    result = run("decompress", srcs[0].with_suffix(".vaez"), "--quiet")
    assert result.exit_code == 0
    assert result.stdout == "" and result.stderr == ""
    assert (tmp_path / "q1.decoded.png").is_file()
    bad = tmp_path / "q3.png"
    bad.write_bytes(b"junk")
    result = run("compress", bad, "-Q")
    _clean_error(result, "q3.png")
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_recursive_keeps_the_folder_tree(run, png, tmp_path):
    png("photos/a.png", size=(16, 8))
    png("photos/sub/deeper/c.png", "L", size=(16, 8))
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    photos = tmp_path / "photos"
    _usage_error(run("compress", photos), "-r", "folder")

    result = run("compress", "-r", photos, "-o", f"{tmp_path / 'coded'}/")
    assert result.exit_code == 0, result.output
    assert [p for p in _listing(tmp_path / "coded") if p.endswith(".vaez")] == [
        "a.vaez", "sub/deeper/c.vaez"]
    result = run("decompress", "-r", tmp_path / "coded", "-o", f"{tmp_path / 'decoded'}/")
    assert result.exit_code == 0, result.output
    decoded = [p for p in _listing(tmp_path / "decoded") if "." in p]
    assert decoded == ["a.png", "sub/deeper/c.png"]
    with Image.open(tmp_path / "decoded" / "sub" / "deeper" / "c.png") as out:
        assert out.mode == "L"

    # without -o, beside each input
    result = run("decompress", "-r", tmp_path / "coded")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "coded" / "sub" / "deeper" / "c.decoded.png").is_file()
    # a folder and -o FILE do not go together
    _usage_error(run("compress", "-r", photos, "-o", tmp_path / "one.vaez"), "folder")


def test_threads_option(run, png, monkeypatch):
    import torch

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
    src = png("t.png")
    assert run("compress", src, "--threads", "1").exit_code == 0
    assert run("decompress", src.with_suffix(".vaez"), "--threads", "3").exit_code == 0
    assert calls == [1, 3]
    assert run("compress", src, "--threads", "0", "--force").exit_code == 2


def test_ctrl_c_exits_130_without_partial_files(run, png, monkeypatch, capsys, tmp_path):
    src = png("k.png")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Codec, "compress", interrupt)
        result = run("compress", src)
        assert result.exit_code == 130 and "interrupted" in result.stderr and "Aborted" not in result.stderr
        assert _entry(monkeypatch, "compress", src) == 130
    with monkeypatch.context() as m:  # interrupted while the output is being renamed into place
        m.setattr(os, "replace", interrupt)
        assert _entry(monkeypatch, "compress", src) == 130
    assert _listing(tmp_path) == ["k.png"]
    with monkeypatch.context() as m:  # interrupted outside the per-file loop: click's Abort
        m.setattr(cli, "_load_codec", interrupt)
        assert _entry(monkeypatch, "compress", src) == 130
    err = capsys.readouterr().err
    assert "Aborted" not in err and "Traceback" not in err and "interrupted" in err


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_shell_completion_script(shell):
    env = {**os.environ, "_VAECODEC_COMPLETE": f"{shell}_source"}
    proc = subprocess.run([sys.executable, "-m", "vaecodec"], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).parents[1], timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "_VAECODEC_COMPLETE" in proc.stdout and f"{shell}_complete" in proc.stdout


def test_help_version_info_models_do_not_import_torch(png, codec, tmp_path):
    vaez = tmp_path / "n.vaez"
    vaez.write_bytes(codec.compress(np.zeros((8, 8, 3), np.uint8)))
    script = f"""
import sys
from vaecodec import cli
for args in (["--help"], ["compress", "--help"], ["--version"], ["info", {str(vaez)!r}], ["models"]):
    sys.argv = ["vaecodec", *args]
    try:
        cli.entry()
    except SystemExit as exc:
        assert exc.code == 0, (args, exc.code)
assert "torch" not in sys.modules
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).parents[1], timeout=60)
    assert proc.returncode == 0, proc.stderr


# ---- rate control, metadata, animation ---------------------------------------------------------


def test_target_flags_exclude_each_other_and_quality(run, png, tmp_path):
    src = png("t.png")
    _usage_error(run("compress", src, "-q", "5", "--target-size", "1000"), "--target-size", "--quality")
    _usage_error(run("compress", src, "--target-bpp", "1", "--target-psnr", "30"), "--target-bpp")
    for bad in (["--target-size", "abc"], ["--target-size", "0"], ["--target-bpp", "-1"]):
        assert run("compress", src, *bad).exit_code == 2
    assert _listing(tmp_path) == ["t.png"]


def test_target_size_gives_a_file_no_larger(run, png, tmp_path):
    src = png("big.png", size=(64, 96))
    result = run("compress", src, "--target-size", "1500")
    assert result.exit_code == 0, result.output
    vaez = src.with_suffix(".vaez")
    assert vaez.stat().st_size <= 1500
    quality = Codec.info(vaez)[0].quality
    assert f"quality {quality:g}," in result.stdout


def test_targets_and_strip_reach_the_codec(run, png, monkeypatch):
    seen = []
    real = Codec.compress

    def spy(self, img, *args, **kwargs):
        seen.append(kwargs)
        return real(self, img, 5)

    monkeypatch.setattr(Codec, "compress", spy)
    src = png("s.png")
    assert run("compress", src, "--target-bpp", "0.5").exit_code == 0
    assert run("compress", src, "--target-psnr", "31.5", "--strip", "--force").exit_code == 0
    assert run("compress", src, "--target-size", "1.5k", "--force").exit_code == 0
    targets = [(k["target_bpp"], k["target_size"], k["target_psnr"], k["strip"]) for k in seen]
    assert targets == [(0.5, None, None, False), (None, None, 31.5, True), (None, 1500, None, False)]


def test_strip_drops_metadata(run, make_image, tmp_path):
    icc = b"not really an ICC profile, but bytes to keep" * 3
    src = tmp_path / "m.png"
    Image.fromarray(make_image(16, 24)).save(src, icc_profile=icc)
    assert run("compress", src, "-o", tmp_path / "kept.vaez").exit_code == 0
    assert run("compress", src, "--strip", "-o", tmp_path / "stripped.vaez").exit_code == 0
    for name in ("kept", "stripped"):
        assert run("decompress", tmp_path / f"{name}.vaez").exit_code == 0
    with Image.open(tmp_path / "kept.decoded.png") as out:
        assert out.info.get("icc_profile") == icc
    with Image.open(tmp_path / "stripped.decoded.png") as out:
        assert "icc_profile" not in out.info


def test_animated_input_warns_once_with_its_name(run, make_image, tmp_path):
    frames = [Image.fromarray(make_image(16, 24, seed=i)).convert("P") for i in range(3)]
    src = tmp_path / "anim.gif"
    frames[0].save(src, save_all=True, append_images=frames[1:])
    result = run("compress", src)
    assert result.exit_code == 0, result.output
    warnings_ = [ln for ln in result.stderr.splitlines() if "warning" in ln]
    assert len(warnings_) == 1 and "anim.gif" in warnings_[0] and "first frame" in warnings_[0]
    assert src.with_suffix(".vaez").is_file()


# ---- output-path failures ------------------------------------------------------------------------


def test_output_path_failures_are_one_line(run, png, tmp_path, monkeypatch):
    src = png("o.png")
    for out in (tmp_path / "missing" / "o.vaez", src / "o.vaez"):
        result = run("compress", src, "-o", out)
        _clean_error(result, str(out))
        assert result.exit_code == 1 and "internal" not in result.stderr
    monkeypatch.chdir(tmp_path)
    _usage_error(run("compress", "."), "folder")
    _usage_error(run("decompress", "."), "folder")
    assert _listing(tmp_path) == ["o.png"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_output_folder(run, png, tmp_path):
    src = png("r.png")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = run("compress", src, "-o", locked / "r.vaez")
        _clean_error(result, "writable")
        assert result.exit_code == 1
    finally:
        locked.chmod(0o755)
