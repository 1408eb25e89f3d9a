"""vaecodec.raydata on a local Ray with 2 CPUs: every .vaez is byte for byte what Codec.compress makes
of the file, decoding gives Codec.decompress's pixels and metadata, and a bad image fails its row only.

Ray starts once for the module (it takes seconds); the images are small, made here."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from vaecodec import OutputError, VaecodecError, raydata

ray = pytest.importorskip("ray", reason="Ray Data is the optional extra vaecodec[ray]")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              # Ray Data's own context warns of its own deprecated settings when it copies itself
              pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context"),
              pytest.mark.filterwarnings("ignore:Use 'expr' instead of 'fn':UserWarning")]
QUALITY = 5
GOOD = {"a.png": "a.vaez", "b.jpg": "b.vaez", "sub/c.png": "sub/c.vaez", "sub/d.png": "sub/d.vaez"}


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray on 2 CPUs, quiet and offline, shut down after the module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        mp.setenv("RAY_DEDUP_LOGS", "0")
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        try:
            yield ray
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory, make_image) -> Path:
    """A folder: four small images (RGB; a JPEG with EXIF, orientation and ICC profile; RGBA in a
    subfolder; grey), one file that is not an image, and a text file that is left alone."""
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    Image.fromarray(make_image(48, 64, seed=1)).save(root / "a.png")
    exif = Image.Exif()
    exif[0x010F], exif[0x0112] = "Canon", 6  # Make, orientation: rotated on load
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(make_image(64, 48, seed=2)).save(root / "b.jpg", quality=90, exif=exif, icc_profile=icc)
    alpha = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1))
    Image.fromarray(np.dstack([make_image(48, 64, seed=3), alpha])).save(root / "sub" / "c.png")
    Image.fromarray(make_image(48, 64, seed=4)[:, :, 1]).save(root / "sub" / "d.png")
    (root / "bad.png").write_bytes(b"not an image at all")
    (root / "notes.txt").write_text("not an image extension: not listed")
    return root


def test_import_needs_neither_ray_nor_torch():
    code = ("import sys, vaecodec, vaecodec.raydata; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'torch', 'pyarrow'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_compress_folder_to_files(local_ray, photos, codec, tmp_path, capsys):
    """The module's command line: a folder's tree to .vaez files, the Codec's bytes; bad.png is a
    one-line error and exit 1, the others are written."""
    out = tmp_path / "coded"
    with pytest.raises(SystemExit) as done:
        raydata.main(["compress", str(photos), "-o", str(out), "-q", str(QUALITY), "--num-actors", "2", "-Q"])
    assert done.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vaecodec: error: bad.png: ") and "not an image" in err[0]
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == sorted(GOOD.values())
    for src, dst in GOOD.items():
        assert (out / dst).read_bytes() == codec.compress(photos / src, quality=QUALITY), src
    # again, the outputs exist: refused before any work, unless force
    with pytest.raises(OutputError, match="already exists"):
        raydata.compress_dataset(photos, str(out), quality=QUALITY, progress=False)


def test_parquet_round_trip(local_ray, photos, codec, tmp_path):
    """Parquet of image bytes -> Parquet shards of .vaez rows (the Codec's bytes, their metadata
    columns; an earlier run's shard replaced) -> decoded PNG files with Codec.decompress's pixels and
    metadata."""
    names = [*GOOD, "bad.png"]
    table = {"name": names, "image": [(photos / n).read_bytes() for n in names]}
    pq.write_table(pa.table(table), tmp_path / "in.parquet")
    (tmp_path / "shards").mkdir()
    pq.write_table(pa.table({"old": [1]}), tmp_path / "shards" / "earlier.parquet")
    summary = raydata.compress_dataset(tmp_path / "in.parquet", str(tmp_path / "shards"), quality=QUALITY,
                                       input_format="parquet", output_format="parquet", force=True,
                                       progress=False)
    assert not (tmp_path / "shards" / "earlier.parquet").exists()
    assert (summary.images, [n for n, _ in summary.errors]) == (4, ["bad.png"])
    rows = {r["name"]: r for r in pq.read_table(tmp_path / "shards").to_pylist()}
    assert sorted(rows) == sorted(names)
    assert rows["bad.png"]["data"] is None and "not an image" in rows["bad.png"]["error"]
    for name in GOOD:
        row, data = rows[name], codec.compress(photos / name, quality=QUALITY)
        assert row["data"] == data and row["error"] is None, name
        header = codec.info(data)[0]
        assert (row["width"], row["height"], row["quality"]) == (header.width, header.height, QUALITY)
        assert row["bytes"] == len(data) and row["bpp"] == pytest.approx(8 * len(data) / (48 * 64))
    assert summary.bytes == sum(rows[n]["bytes"] for n in GOOD)

    decoded = tmp_path / "decoded"
    summary = raydata.decompress_dataset(tmp_path / "shards", str(decoded), input_format="parquet",
                                         progress=False)
    assert (summary.images, summary.errors) == (4, [("bad.png", "no data in this row")])
    for name in GOOD:
        want = codec.decompress(rows[name]["data"])
        got = Image.open(decoded / Path(name).with_suffix(".png"))
        assert got.mode == want.mode and np.array_equal(np.asarray(got), np.asarray(want)), name
        assert got.info.get("icc_profile") == want.info.get("icc_profile"), name
        assert got.getexif() == want.getexif(), name
    assert Image.open(decoded / "b.png").info.get("icc_profile")  # b.jpg's profile came through


def test_stage_in_a_pipeline_to_webdataset(local_ray, photos, codec, tmp_path):
    """compress_stage in a pipeline of one's own, as docs/ray.md shows it: read_binary_files -> .vaez
    rows -> WebDataset shards of <key>.vaez and <key>.json, the failed rows left out."""
    files = ray.data.read_binary_files(str(photos), include_paths=True, file_extensions=["png"])
    coded = raydata.compress_stage(files, quality=QUALITY)
    coded.filter(lambda row: row["error"] is None).map(raydata.webdataset_sample).write_webdataset(
        str(tmp_path / "wds"))
    members = {}
    for shard in (tmp_path / "wds").glob("*.tar"):
        with tarfile.open(shard) as tar:
            members |= {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    pngs = [n for n in GOOD if n.endswith(".png")]
    keys = {str(photos / n)[: -len(".png")].lstrip("/"): n for n in pngs}
    assert sorted(members) == sorted(f"{k}.{ext}" for k in keys for ext in ("json", "vaez"))
    for key, name in keys.items():
        data = codec.compress(photos / name, quality=QUALITY)
        assert members[f"{key}.vaez"] == data, name
        meta = json.loads(members[f"{key}.json"])
        assert (meta["name"], meta["bytes"], meta["quality"]) == (str(photos / name), len(data), QUALITY)


def test_stage_on_read_images(local_ray, photos, codec):
    """read_images hands the actors decoded pixels: coded as the Codec codes those arrays."""
    pixels = ray.data.read_images(str(photos / "sub"), include_paths=True)
    rows = raydata.compress_stage(pixels, input_column="image", quality=QUALITY).take_all()
    assert len(rows) == 2
    for row in rows:
        want = codec.compress(np.asarray(Image.open(row["name"])), quality=QUALITY)
        assert row["data"] == want and row["error"] is None, row["name"]


def test_actor_codes_bytes_arrays_and_nulls(codec, make_image):
    """What read_images and a failed earlier row give the actor: arrays are coded as the Codec codes
    them, a null or an unreadable file is that row's error, in place."""
    pixels = make_image(48, 64, seed=5)
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    actor = raydata.CompressActor(input_column="image", name_column="path", quality=QUALITY, device="cpu")
    batch = {"path": np.array(["x.png", "y.png", "z.png", "w.png"], dtype=object),
             "image": np.array([png.getvalue(), pixels, None, b"junk"], dtype=object)}
    rows = actor(batch).to_pylist()
    assert [r["name"] for r in rows] == ["x.png", "y.png", "z.png", "w.png"]
    assert rows[0]["data"] == rows[1]["data"] == codec.compress(pixels, quality=QUALITY)
    assert rows[2]["error"] == "no data in this row" and rows[2]["data"] is None
    assert rows[3]["error"].startswith("w.png: ") and rows[3]["width"] is None


def test_refused_before_any_work(photos, tmp_path):
    """Outputs that clash, escape the folder or exist are refused before Ray is asked for anything."""
    (tmp_path / "x").mkdir()
    for name in ("x.png", "x.jpg"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x" / name)
    with pytest.raises(OutputError, match="would both be written to"):
        raydata.compress_dataset(tmp_path / "x", str(tmp_path / "out"))
    pq.write_table(pa.table({"name": ["../../evil.png"], "image": [b""]}), tmp_path / "e.parquet")
    with pytest.raises(OutputError, match="not a relative name"):
        raydata.compress_dataset(tmp_path / "e.parquet", str(tmp_path / "out"), input_format="parquet")
    with pytest.raises(VaecodecError, match="no column 'pixels'"):
        raydata.compress_dataset(tmp_path / "e.parquet", str(tmp_path / "out"), input_format="parquet",
                                 image_column="pixels")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("someone's file")
    with pytest.raises(OutputError, match="not empty"):
        raydata.compress_dataset(photos, str(tmp_path / "full"), output_format="parquet")
    with pytest.raises(OutputError, match="other than Parquet"):
        raydata.compress_dataset(photos, str(tmp_path / "full"), output_format="parquet", force=True)
    with pytest.raises(VaecodecError, match="no image files found"):
        raydata.compress_dataset(tmp_path / "full", str(tmp_path / "out"))
