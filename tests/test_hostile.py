"""Hostile files and huge images: every attack is refused in one line, in bounded time and memory,
and a batch goes on past it.

The decoder's fuzzing is tests/test_fuzz.py (and bench/fuzz.py); this file holds the named attacks
and the command line's behaviour under them, several in a real subprocess under an address-space
limit (RLIMIT_AS), as a service would run vaecodec.
"""

from __future__ import annotations

import dataclasses
import io
import os
import resource
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import png_header_only, smooth_image
from PIL import Image

from bench import fuzz
from vaecodec import (
    Codec,
    CorruptFileError,
    ImageError,
    LimitError,
    container,
    entropy,
    files,
    metadata,
)

MEMORY_LIMIT = 4_000_000_000  # RLIMIT_AS of the CLI subprocesses: what a careful service would set


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("vaecodec: error:")]


def _one_error(stderr: str, *needles: str) -> str:
    errors = _errors(stderr)
    assert len(errors) == 1, stderr
    assert "internal error" not in errors[0] and "Traceback" not in stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@dataclasses.dataclass
class Ran:
    code: int
    stdout: str
    stderr: str
    peak_rss_mb: float
    seconds: float


def _cli(args: list[str], cwd: Path, memory: int | None = MEMORY_LIMIT, timeout: float = 180) -> Ran:
    """``python -m vaecodec ARGS`` in a subprocess (under RLIMIT_AS = ``memory``): its exit status,
    output, peak RSS (its own, from wait4) and wall time."""
    def limit() -> None:
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    out, err = cwd / ".stdout", cwd / ".stderr"
    start = time.perf_counter()
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "vaecodec", *args], cwd=cwd, stdout=fo, stderr=fe,
                                stdin=subprocess.DEVNULL, preexec_fn=limit)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - start > timeout:
                proc.kill()
                proc.wait()
                pytest.fail(f"vaecodec {' '.join(args)} ran past {timeout} s")
            time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    ran = Ran(proc.returncode, out.read_text(), err.read_text(), usage.ru_maxrss / 1024,
              time.perf_counter() - start)
    out.unlink()
    err.unlink()
    return ran


@pytest.fixture(scope="module")
def good(codec) -> bytes:
    return codec.compress(smooth_image(16, 16, seed=5), 4)


def _png(path: Path, height: int = 16, width: int = 24, seed: int = 0, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(smooth_image(height, width, seed)).save(path, **save)
    return path


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---- files that claim a giant image ---------------------------------------------------------------


def test_giant_header_with_empty_streams(codec, good, tmp_path):
    """8192 x 8192 claimed by a ~30-byte file with a valid CRC and no data: refused at once in one
    line, in small memory; the good file after it on the command line is still decoded."""
    header, _ = container.unpack(good)
    tiny = container.pack(dataclasses.replace(header, width=8192, height=8192),
                          container.Payload(b"", b"", b""))
    assert 28 <= len(tiny) <= 32
    start = time.perf_counter()
    with pytest.raises(CorruptFileError) as info:
        codec.decompress(tiny)
    assert time.perf_counter() - start < 2
    assert "\n" not in str(info.value) and "ran out of data" in str(info.value)

    (tmp_path / "tiny8192.vaez").write_bytes(tiny)
    (tmp_path / "good.vaez").write_bytes(good)
    ran = _cli(["decompress", "tiny8192.vaez", "good.vaez", "-o", "out/"], tmp_path)
    assert ran.code == 1, ran.stderr
    _one_error(ran.stderr, "tiny8192.vaez")
    assert _listing(tmp_path / "out") == ["good.png"]
    assert ran.peak_rss_mb < 1500  # the interpreter, torch and the model: no image-sized allocation


def _z_only(codec, header: container.Header, width: int, height: int) -> bytes:
    """A file whose ANS stream holds a whole z (cheap: every symbol the most probable) and no y: the
    decoder gets as far as the hyper-synthesis at the claimed size before the data runs out."""
    lc = codec.model.latent
    tables = lc.z_coder.tables
    mode = np.array([o + int(np.argmax(q[:-1])) for o, q in zip(tables.offsets, tables.split(), strict=True)])
    shape = (lc.z_channels, -(-height // 64), -(-width // 64))
    stream, escapes = entropy.encode(lc.z_coder, np.broadcast_to(mode[:, None, None], shape).copy(),
                                     lc.y_coder, [])
    return container.pack(dataclasses.replace(header, width=width, height=height),
                          container.Payload(stream, escapes, b""))


def test_giant_header_with_only_z_in_the_stream(codec, good, tmp_path):
    """A 5 KB file claiming 2048 x 2048 whose stream holds z and nothing else makes the decoder run
    the prior networks at that size before the stream runs dry. Under a 4 GB address-space limit
    that is one line (the stream ran dry, or out of memory: a LimitError), and the batch goes on."""
    header, _ = container.unpack(good)
    (tmp_path / "zonly.vaez").write_bytes(_z_only(codec, header, 2048, 2048))
    (tmp_path / "good.vaez").write_bytes(good)
    ran = _cli(["decompress", "zonly.vaez", "good.vaez", "-o", "out/"], tmp_path)
    assert ran.code == 1, ran.stderr
    line = _one_error(ran.stderr, "zonly.vaez")
    assert "ran out of data" in line or "out of memory" in line
    assert _listing(tmp_path / "out") == ["good.png"]


def test_max_pixels_refuses_before_decoding(codec, good, monkeypatch):
    header, _ = container.unpack(good)
    data = _z_only(codec, header, 4096, 4096)

    def must_not_run(*args, **kwargs):
        raise AssertionError("entropy decoding started above the pixel limit")

    limited = Codec(device="cpu", max_pixels=1 << 20)
    monkeypatch.setattr(Codec, "_decode", must_not_run)
    with pytest.raises(LimitError, match="limit of 1048576 pixels"):
        limited.decompress(data)


# ---- payloads altered with the CRC recomputed -----------------------------------------------------


@pytest.mark.parametrize("name", ["rgb-q10-escapes", "la-q6-meta", "rgb-q6-70x40-nofilter"])
def test_crc_recomputed_stream_and_escape_damage_is_refused(codec, name):
    """Stream bytes flipped or replaced and escape streams replaced, each file packed again with a
    valid CRC: refused, unless it decodes to exactly the original symbols."""
    corpus = fuzz.corpus_for(codec)
    data = corpus[name]
    header, payload = container.unpack(data)
    original = codec.decode_integers(data)
    rng = np.random.default_rng(len(name))
    stream = payload.stream
    damaged = []
    for i in np.linspace(0, len(stream) - 1, 24).astype(int):
        damaged.append(dataclasses.replace(payload, stream=stream[:i] + bytes([stream[i] ^ (1 << (i % 8))])
                                           + stream[i + 1 :]))
        word = 4 * (i // 4)  # a whole 32-bit word replaced: the length stays a multiple of 4
        damaged.append(dataclasses.replace(payload, stream=stream[:word] + rng.bytes(4) + stream[word + 4 :]))
    esc = payload.escapes
    for new in (b"", esc[:-1], esc + b"\x00", b"\x01" + esc[1:], b"\x7f" * len(esc), rng.bytes(len(esc)),
                bytes([esc[0] ^ 2]) + esc[1:] if esc else b"\x02", b"\xff" * 11):
        if new != esc:
            damaged.append(dataclasses.replace(payload, escapes=new))
    refused = 0
    for p in damaged:
        bad = container.pack(header, p)
        try:
            got = codec.decode_integers(bad)
        except CorruptFileError:
            refused += 1
            continue
        for key in ("z", "y"):
            assert np.array_equal(got[key], original[key]), "a damaged payload decoded to other symbols"
        assert codec.decompress(bad).size == codec.decompress(data).size
    assert refused >= len(damaged) - 2


# ---- hostile images as encoder input ------------------------------------------------------------------


def test_png_decompression_bomb(codec, run, tmp_path):
    """A 200-byte PNG claiming 30000 x 30000 (Pillow's bomb limit) or 12000 x 12000 (above its
    warning, then truncated): one-line ImageError, exit 1, the next input still coded."""
    with pytest.raises(ImageError, match="exceeds limit"):
        codec.compress(png_header_only(30000, 30000))
    (tmp_path / "bomb.png").write_bytes(png_header_only(30000, 30000))
    (tmp_path / "big.png").write_bytes(png_header_only(12000, 12000))
    _png(tmp_path / "ok.png")
    result = run("compress", tmp_path / "bomb.png", tmp_path / "big.png", tmp_path / "ok.png")
    assert result.exit_code == 1
    errors = _errors(result.stderr)
    assert len(errors) == 2 and "bomb.png" in errors[0] and "big.png" in errors[1], result.stderr
    assert all("internal" not in e for e in errors)
    assert (tmp_path / "ok.vaez").is_file() and not (tmp_path / "bomb.vaez").exists()


def test_pillow_pixel_limit_lowered(run, tmp_path, monkeypatch):
    """With ``Image.MAX_IMAGE_PIXELS`` lowered, an image above twice the limit is a one-line error and
    one above the limit a one-line warning."""
    src = _png(tmp_path / "p.png")  # 384 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    result = run("compress", src)
    assert result.exit_code == 1
    _one_error(result.stderr, "p.png", "decompression bomb")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)
    result = run("compress", src)
    assert result.exit_code == 0, result.stderr
    warned = [ln for ln in result.stderr.splitlines() if "warning" in ln]
    assert len(warned) == 1 and "p.png" in warned[0] and "decompression bomb" in warned[0]


def test_max_pixels_option(run, codec, tmp_path):
    small, big = _png(tmp_path / "small.png", 8, 8), _png(tmp_path / "big.png", 16, 24)
    result = run("compress", big, small, "--max-pixels", "100", "-o", f"{tmp_path / 'coded'}/")
    assert result.exit_code == 1
    _one_error(result.stderr, "big.png", "24x16", "limit of 100 pixels")
    assert _listing(tmp_path / "coded") == ["small.vaez"]

    big_vaez = tmp_path / "big.vaez"
    big_vaez.write_bytes(codec.compress(big))
    result = run("decompress", big_vaez, tmp_path / "coded" / "small.vaez", "--max-pixels", "100",
                 "-o", f"{tmp_path / 'decoded'}/")
    assert result.exit_code == 1
    _one_error(result.stderr, "big.vaez", "limit of 100 pixels")
    assert _listing(tmp_path / "decoded") == ["small.png"]

    for limit in ("0", "384"):  # 0: the format's limit; a limit is inclusive
        result = run("decompress", big_vaez, "--max-pixels", limit, "-o", tmp_path / f"out{limit}.png")
        assert result.exit_code == 0, result.stderr
        result = run("compress", big, "--max-pixels", limit, "-o", tmp_path / f"out{limit}.vaez")
        assert result.exit_code == 0, result.stderr
    for bad in ("-1", "many"):
        assert run("compress", big, "--max-pixels", bad, "-o", tmp_path / "x.vaez").exit_code == 2
    assert "--max-pixels" in run("decompress", "--help").stdout


def test_max_pixels_refuses_an_input_image_before_decoding_it(run, tmp_path, monkeypatch):
    from PIL import ImageFile

    big = _png(tmp_path / "big.png", 16, 24)

    def must_not_decode(self, *args, **kwargs):
        raise OSError("the pixels were decoded before the limit was checked")

    monkeypatch.setattr(ImageFile.ImageFile, "load", must_not_decode)
    result = run("compress", big, "--max-pixels", "100")
    _one_error(result.stderr, "limit of 100 pixels")


# ---- outputs that cannot be written --------------------------------------------------------------------


def test_output_folder_removed_mid_batch(run, tmp_path, monkeypatch):
    """The folder an output goes to vanishes while the image is coded: one line, the batch goes on,
    no temporary file anywhere."""
    first, second = _png(tmp_path / "a" / "x.png"), _png(tmp_path / "b" / "y.png", seed=1)
    real = Codec.compress

    def compress_then_remove(self, img, *args, **kwargs):
        data = real(self, img, *args, **kwargs)
        if (tmp_path / "a").exists():
            first.unlink()
            (tmp_path / "a").rmdir()
        return data

    monkeypatch.setattr(Codec, "compress", compress_then_remove)
    result = run("compress", first, second, "-j", "1")  # here: the patch is in this process
    assert result.exit_code == 1
    _one_error(result.stderr, "x.vaez")
    assert _listing(tmp_path) == ["b", "b/y.png", "b/y.vaez"]


def test_unwritable_output_folder_simulated(run, tmp_path, monkeypatch):
    """A folder that refuses new files (EACCES, as a read-only one does for a user other than root):
    one line, the batch goes on, nothing left behind."""
    locked, free = _png(tmp_path / "locked" / "x.png"), _png(tmp_path / "free" / "y.png", seed=1)
    real = files.os.open

    def os_open(path, *args, **kwargs):
        if Path(path).parent.name == "locked":
            raise PermissionError(13, "Permission denied")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(files.os, "open", os_open)
    result = run("compress", locked, free, "-j", "1")  # here: the patch is in this process
    assert result.exit_code == 1
    _one_error(result.stderr, "x.vaez", "Permission denied")
    assert _listing(tmp_path) == ["free", "free/y.png", "free/y.vaez", "locked", "locked/x.png"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_output_folder_in_a_batch(run, tmp_path):
    locked, free = _png(tmp_path / "locked" / "x.png"), _png(tmp_path / "free" / "y.png", seed=1)
    (tmp_path / "locked").chmod(0o555)
    try:
        result = run("compress", locked, free)
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert result.exit_code == 1
    _one_error(result.stderr, "x.vaez", "writable")
    assert (tmp_path / "free" / "y.vaez").is_file()


def test_folder_as_input(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("compress", ".")
    assert result.exit_code == 2
    _one_error(result.stderr, "folder")
    result = run("compress", "-r", ".")  # a folder without images
    assert result.exit_code == 1
    _one_error(result.stderr, "no image files")
    assert _listing(tmp_path) == []


# ---- odd inputs ----------------------------------------------------------------------------------------


def test_animated_gif_warns_and_codes_the_first_frame(codec, tmp_path):
    frames = [Image.fromarray(smooth_image(16, 24, seed=i)) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    with pytest.warns(UserWarning, match="3 frames.*first frame"):
        data = codec.compress(buf.getvalue(), 5)
    assert codec.decompress(data).size == (24, 16)


def test_huge_exif_round_trips(codec, tmp_path):
    """60 KB of EXIF user comment (incompressible) is kept byte for byte."""
    comment = b"ASCII\0\0\0" + np.random.default_rng(0).bytes(60_000)
    exif = Image.Exif()
    exif[0x8769] = {0x9286: comment}
    src = _png(tmp_path / "exif.png", exif=exif)
    data = codec.compress(src, 3)
    assert len(data) > 60_000
    out = codec.decompress(data)
    assert out.getexif().get_ifd(0x8769)[0x9286] == comment
    png = tmp_path / "exif.decoded.png"
    out.save(png, **metadata.save_options(out, "PNG"))
    with Image.open(png) as back:
        assert back.getexif().get_ifd(0x8769)[0x9286] == comment


def test_metadata_section_inflating_past_its_cap(codec, good):
    """A deflated metadata section of ~65 KB that inflates beyond ``metadata.MAX_BYTES`` (a zlib bomb)
    is refused, CRC and all else valid."""
    header, payload = container.unpack(good)
    bomb = bytes([metadata.DEFLATE]) + zlib.compress(bytes(metadata.MAX_BYTES + 1), 9)
    assert len(bomb) < 100_000
    data = container.pack(header, dataclasses.replace(payload, metadata=bomb))
    with pytest.raises(CorruptFileError, match="metadata section is damaged or too large"):
        codec.decompress(data)
    # exactly at the cap: a well-formed section is kept
    body = bytes([metadata.EXIF, 0xFB, 0xFF, 0xFF, 0x1F]) + bytes(metadata.MAX_BYTES - 5)  # varint 2**26 - 5
    md = metadata.decode(bytes([metadata.DEFLATE]) + zlib.compress(body, 9))
    assert len(md.exif) == metadata.MAX_BYTES - 5


def test_unicode_path_with_spaces(run, tmp_path):
    src = _png(tmp_path / "фото 1.png")
    result = run("compress", src)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "фото 1.vaez").is_file()
    env_c = {**os.environ, "LC_ALL": "C", "LANG": "C"}  # a bare locale: the name must still print
    ran = subprocess.run([sys.executable, "-m", "vaecodec", "decompress", "фото 1.vaez", "-o", "вывод 2/"],
                         cwd=tmp_path, env=env_c, capture_output=True, text=True, encoding="utf-8",
                         timeout=180)
    assert ran.returncode == 0, ran.stderr
    assert "фото 1.vaez" in ran.stdout
    with Image.open(tmp_path / "вывод 2" / "фото 1.png") as out:
        assert out.size == (24, 16)


# ---- interrupts and memory -------------------------------------------------------------------------------


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_sigint_mid_batch_exits_130_without_partial_files(tmp_path, jobs):
    """A real SIGINT to the CLI while it codes a batch, here or in worker processes: exit 130, one
    line, and only whole outputs."""
    names = []
    for i in range(40):
        _png(tmp_path / f"in{i:02d}.png", 96, 128, seed=i)
        names.append(f"in{i:02d}.png")
    # a shell without job control starts background jobs with SIGINT ignored, and the child would
    # inherit that: give it the default disposition, as a terminal's foreground process has
    proc = subprocess.Popen([sys.executable, "-m", "vaecodec", "compress", *names, "-o", "out/", "-j", jobs],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 180
    while not (tmp_path / "out" / "in00.vaez").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no output within 180 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Aborted" not in stderr
    _one_error(stderr, "interrupted")
    done = _listing(tmp_path / "out")
    assert 1 <= len(done) < 40, "the batch ended before the interrupt: make it longer"
    for name in done:
        assert name.endswith(".vaez") and not name.startswith("."), done
        container.unpack((tmp_path / "out" / name).read_bytes())  # whole, CRC right
    assert not [p for p in _listing(tmp_path) if p.endswith(".tmp")]


def test_memory_error_in_a_batch_is_a_limit_error(codec, monkeypatch):
    """Out of memory for one group (MemoryError, or torch's allocation failure) is that image's
    LimitError with on_error="return"; the other images are coded and decoded."""
    images = [smooth_image(16, 16, seed=1), smooth_image(40, 17, seed=2), smooth_image(16, 24, seed=3)]
    real_group, real_rgb = Codec._compress_group, Codec._rgb

    def group(self, pics, *args, **kwargs):
        if pics[0].size == (17, 40):
            raise MemoryError
        return real_group(self, pics, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(Codec, "_compress_group", group)
        out = codec.compress_batch(images, 3, on_error="return")
    assert isinstance(out[1], LimitError) and "out of memory" in str(out[1])
    assert isinstance(out[0], bytes) and isinstance(out[2], bytes)

    coded = codec.compress_batch(images, 3)
    for exc in (MemoryError(), RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to "
                                            "allocate 3774873600 bytes. Error code 12")):
        def rgb(self, group, *args, exc=exc, **kwargs):
            if group[0].size == (17, 40):
                raise exc
            return real_rgb(self, group, *args, **kwargs)

        with monkeypatch.context() as m:
            m.setattr(Codec, "_rgb", rgb)
            dec = codec.decompress_batch(coded, on_error="return")
            assert isinstance(dec[1], LimitError) and "\n" not in str(dec[1])
            assert dec[0].size == (16, 16) and dec[2].size == (24, 16)
            with pytest.raises(LimitError):
                codec.decompress(coded[1])

    def bug(self, group, *args, **kwargs):
        raise RuntimeError("shape mismatch")  # not memory: a bug stays a bug

    monkeypatch.setattr(Codec, "_rgb", bug)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        codec.decompress_batch(coded, on_error="return")


def test_memory_error_in_the_cli_is_one_line(run, tmp_path, monkeypatch):
    first, second = _png(tmp_path / "a.png"), _png(tmp_path / "b.png", seed=1)
    real = Codec._compress_group

    def group(self, pics, *args, **kwargs):
        if (pics[0].rgb == np.asarray(Image.open(first))).all():
            raise MemoryError
        return real(self, pics, *args, **kwargs)

    monkeypatch.setattr(Codec, "_compress_group", group)
    result = run("compress", first, second, "-j", "1")  # here: the patch is in this process
    assert result.exit_code == 1
    _one_error(result.stderr, "a.png", "out of memory")
    assert (tmp_path / "b.vaez").is_file() and not (tmp_path / "a.vaez").exists()

