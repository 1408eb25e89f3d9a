"""Worker processes (vaecodec.pipeline): the same bytes and pixels as coding here, in input order,
one bad input failing alone, bounded read-ahead, and the CLI's -j."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import smooth_image
from PIL import Image

from vaecodec import pipeline
from vaecodec.codec import _decompress_chunk
from vaecodec.errors import ImageError, VaecodecError


def _images() -> list:
    # two sizes (two network groups) and one input that is not an image, in the middle
    return [smooth_image(32, 48, seed=1), smooth_image(40, 24, seed=2), b"not an image",
            smooth_image(32, 48, seed=3)]


def test_workers_give_the_same_files_and_images_in_order(codec):
    here = codec.compress_batch(_images(), 4, on_error="return")
    there = codec.compress_batch(_images(), 4, on_error="return", workers=2)
    assert isinstance(here[2], ImageError) and isinstance(there[2], ImageError)
    assert str(here[2]) == str(there[2])
    assert [here[i] for i in (0, 1, 3)] == [there[i] for i in (0, 1, 3)]
    decoded = codec.decompress_batch(there, on_error="return", output="numpy", workers=2)
    # an error among the inputs is passed through (a copy of it, from a worker)
    assert type(decoded[2]) is ImageError and str(decoded[2]) == str(there[2])
    for i in (0, 1, 3):
        assert np.array_equal(decoded[i], codec.decompress(here[i], output="numpy"))
    with pytest.raises(ImageError):
        codec.compress_batch(_images(), 4, workers=2)  # on_error="raise"


def test_iterators_read_only_a_few_inputs_ahead(codec):
    pulled = 0

    def source(n: int):
        nonlocal pulled
        for i in range(n):
            pulled += 1
            yield smooth_image(16, 16, seed=i)

    for workers, ahead in ((1, 1), (2, pipeline.IN_FLIGHT_PER_WORKER * 2)):
        pulled = 0
        for k, data in enumerate(codec.compress_iter(source(12), 2, workers=workers, wiener=False), 1):
            assert isinstance(data, bytes)
            assert pulled <= k + ahead, (workers, k, pulled)
        assert k == 12 and pulled == 12


def test_a_worker_that_cannot_load_its_model_stops_the_run_in_one_line(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not weights")
    spec = pipeline.CodecSpec(str(bad), "cpu", None, 1)
    with pipeline.Pool(spec, 2) as pool, pytest.raises(VaecodecError) as err:
        list(pool.map(_decompress_chunk, [([b"x"], "pil"), ([b"y"], "pil")]))
    assert "\n" not in str(err.value) and "bad.safetensors" in str(err.value)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_workers_must_be_a_positive_whole_number(codec, bad):
    with pytest.raises(VaecodecError, match="workers"):
        codec.compress_batch([smooth_image(16, 16)], workers=bad)


def test_cli_jobs_give_the_same_files_and_report_a_bad_input(tmp_path):
    names = []
    for i, (h, w) in enumerate([(32, 48), (40, 24), (24, 24)]):
        Image.fromarray(smooth_image(h, w, seed=i)).save(tmp_path / f"im{i}.png")
        names.append(f"im{i}.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "vaecodec", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)

    one = run("compress", *names, "-q", "3", "-o", "one/", "-j", "1", "-Q")
    assert one.returncode == 0, one.stderr
    two = run("compress", *names, "broken.png", "-q", "3", "-o", "two/", "-j", "2", "--json")
    assert two.returncode == 1
    assert two.stderr.count("error") == 1 and "broken.png" in two.stderr and "Traceback" not in two.stderr
    assert len(two.stdout.splitlines()) == 4  # one record per input, in input order
    assert '"input": "broken.png"' in two.stdout.splitlines()[3]
    for name in names:
        stem = name.removesuffix(".png")
        one_file, two_file = (tmp_path / d / f"{stem}.vaez" for d in ("one", "two"))
        assert one_file.read_bytes() == two_file.read_bytes()
    back = run("decompress", "two/", "-r", "-o", "back/", "-j", "2", "-Q")
    assert back.returncode == 0, back.stderr
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == ["im0.png", "im1.png", "im2.png"]


def test_a_stopped_worker_leaves_no_temporary_file(tmp_path):
    """What a worker's SIGTERM handler does first: delete the temporary files being written, since
    the exception it raises next may land where write_atomic cannot clean up."""
    from vaecodec import files

    seen = []

    def writer(f):
        f.write(b"partial")
        seen.extend(p.name for p in tmp_path.iterdir())
        files.remove_partial_outputs()
        assert not list(tmp_path.iterdir())
        raise SystemExit(143)

    with pytest.raises(SystemExit):
        files.write_atomic(tmp_path / "out.vaez", writer)
    assert len(seen) == 1 and seen[0].startswith(".out.vaez.") and seen[0].endswith(".tmp")
    assert not list(tmp_path.iterdir()) and not files._in_progress
