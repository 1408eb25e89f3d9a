"""The latent commands: analyze, scan, interpolate, sample (outputs, overwrite protection, errors)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from vaecodec import container


@pytest.fixture
def images(tmp_path, make_image):
    """Two small PNGs in tmp_path/in, a and b."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name, seed, (h, w) in (("a.png", 1, (32, 48)), ("b.png", 2, (40, 40))):
        Image.fromarray(make_image(h, w, seed=seed)).save(folder / name)
    return folder


def test_analyze_json_matches_the_file_and_writes_a_map(run, images, tmp_path):
    out = tmp_path / "map.png"
    result = run("analyze", images / "a.png", "-q", 4, "--no-filter", "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    vaez = run("compress", images / "a.png", "-q", 4, "--no-filter", "-o", tmp_path / "a.vaez")
    assert vaez.exit_code == 0
    payload = container.unpack((tmp_path / "a.vaez").read_bytes())[1]
    assert record["payload_bits"] == 8 * (len(payload.stream) + len(payload.escapes))
    assert 0 <= record["payload_bits"] - record["latent_bits"] <= 96
    assert record["file_bits"] == 8 * (tmp_path / "a.vaez").stat().st_size
    assert Image.open(out).format == "PNG"
    again = run("analyze", images / "a.png", "-o", out)
    assert again.exit_code == 1 and "already exists" in again.stderr
    assert run("analyze", images / "a.png", "-o", images / "a.png", "--force").exit_code == 2


def test_scan_ranks_a_folder_and_goes_on_past_a_bad_file(run, images, make_image):
    import numpy as np

    noise = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(noise).save(images / "sub_noise.png")
    (images / "broken.png").write_bytes(b"not an image")
    result = run("scan", images, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert [r["path"].rsplit("/", 1)[1] for r in report["ranked"]][0] == "sub_noise.png"
    assert len(report["ranked"]) == 3 and report["images"] == 4
    assert report["errors"][0]["path"].endswith("broken.png") and "broken.png" in result.stderr
    top = run("scan", images, "--top", 1, "-Q")
    assert top.exit_code == 1 and len(top.stdout.splitlines()) == 0  # -Q: errors only
    listed = run("scan", images, "--top", 2)
    assert "sub_noise.png" in listed.stdout.splitlines()[0] and len(listed.stdout.splitlines()) == 2


def test_interpolate_strip_and_frames_are_deterministic(run, images, tmp_path):
    a, b = images / "a.png", images / "b.png"
    for name in ("s1.png", "s2.png"):
        assert run("interpolate", a, b, "--steps", 3, "-q", 3, "-o", tmp_path / name).exit_code == 0
    assert (tmp_path / "s1.png").read_bytes() == (tmp_path / "s2.png").read_bytes()
    assert Image.open(tmp_path / "s1.png").size == (3 * 48 + 2 * 4, 32)
    result = run("interpolate", a, b, "--steps", 3, "-q", 3, "-o", f"{tmp_path / 'frames'}/")
    assert result.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["00.png", "01.png", "02.png"]
    assert run("interpolate", a, b, "-o", b).exit_code == 2  # an input is never an output


def test_sample_is_the_same_bytes_twice_and_refuses_to_overwrite(run, tmp_path):
    for name in ("x.png", "y.png"):
        assert run("sample", "--size", "40x24", "--seed", 5, "-o", tmp_path / name).exit_code == 0
    assert (tmp_path / "x.png").read_bytes() == (tmp_path / "y.png").read_bytes()
    assert Image.open(tmp_path / "x.png").size == (40, 24)
    assert run("sample", "--size", "40x24", "-o", tmp_path / "x.png").exit_code == 1
    assert run("sample", "--size", "40by24", "-o", tmp_path / "z.png").exit_code == 2
