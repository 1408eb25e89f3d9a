"""Compression as a Ray Data stage: one :class:`~vaecodec.codec.Codec` per actor, on one machine or a
cluster of GPU nodes.

Data path::

    image files or Parquet -> Ray Data read -> CompressActor (one Codec per actor; one GPU each when
        the cluster has GPUs, CPU threads otherwise) -> rows: name, width, height, quality, bytes, bpp,
        data (the .vaez bytes), error -> <name>.vaez files (written by the driver) or Parquet shards
        (written by the workers)
    .vaez files or Parquet -> DecompressActor -> rows: name, width, height, mode, bytes, data (an image
        file, PNG by default), error -> files or Parquet shards

Why raw bytes: the actors code each original file's bytes (``ray.data.read_binary_files``), so the
codec sees the ICC profile, EXIF and XMP exactly as :meth:`Codec.compress` on the path does, and the
.vaez bytes are identical to it. The actors also take decoded arrays (what ``ray.data.read_images``
gives), which carry no metadata.

One bad image fails its row, never the dataset: the row's ``error`` says why (its other columns are
null) and :class:`Summary` lists them at the end. Any other exception is a bug and fails the run.

Inputs are listed, and outputs checked, on the driver before Ray does any work: two inputs that would
be written to one file, an existing output without ``force``, a name that would leave the output
folder are refused up front, as the CLI refuses them.

Ray is imported inside the functions only: ``import vaecodec`` never needs it (``pip install
'vaecodec[ray]'`` adds it). How to run it on a cluster: docs/ray.md; its cost against the plain batch
API: bench/results/ray.md. Entry points: :func:`compress_dataset`, :func:`decompress_dataset`, and
``python -m vaecodec.raydata compress|decompress SRC... -o DST``.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import ImageError, OutputError, VaecodecError
from .files import check_writable, write_atomic
from .quality import DEFAULT_EFFORT

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    import pyarrow.fs as pafs

Format = Literal["files", "parquet"]
Device = Literal["auto", "cpu", "cuda"]
VAEZ = ".vaez"
# Rows per actor call: two network batches on a GPU; on a CPU the network batch is 1 anyway, and
# single rows spread the work evenly over the actors.
IMAGES_PER_CALL = {"cuda": 16, "cpu": 1}
# Reading and writing files is I/O: those tasks reserve no CPU (on a cluster without GPUs the CPUs are
# the actors', and a read task waiting for a CPU that an actor holds would wait forever).
IO: dict[str, Any] = {"num_cpus": 0}
# Read tasks at a time, per actor: each starts a Ray worker process, which on a few CPUs costs more
# than the reading, but a GPU codes images many times faster than a CPU core and must be kept fed.
READS_PER_ACTOR = {"cuda": 4, "cpu": 1}
SUMMARY_COLUMNS = ["name", "width", "height", "bytes", "error"]


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise VaecodecError("Ray Data is not installed: pip install 'vaecodec[ray]'") from None
    return ray


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


# ---- the actors --------------------------------------------------------------------------------


def _schema(kind: str) -> pa.Schema:
    """The columns of the rows the actors return: ``compressed`` (.vaez data) or ``decompressed``
    (image files)."""
    import pyarrow as pa

    if kind == "compressed":
        middle = [("quality", pa.float64()), ("bytes", pa.int64()), ("bpp", pa.float64())]
    else:
        middle = [("mode", pa.string()), ("bytes", pa.int64())]
    return pa.schema([("name", pa.string()), ("width", pa.int32()), ("height", pa.int32()), *middle,
                      ("data", pa.binary()), ("error", pa.string())])


class _CodecActor:
    """One Codec for the actor's life; a batch (Ray's ``numpy`` format) -> a pyarrow table of rows.
    ``input_column`` holds the inputs (file bytes or arrays), ``name_column`` names the rows;
    ``batch_size`` is the Codec's (images per network pass)."""

    kind = ""

    def __init__(self, input_column: str, name_column: str, model: str | None, device: str,
                 threads: int | None, max_pixels: int | None, batch_size: int | None) -> None:
        import torch

        from .codec import Codec

        if threads:
            torch.set_num_threads(threads)
        self.codec = Codec(model, device, max_pixels)
        self.input_column, self.name_column, self.batch_size = input_column, name_column, batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        import pyarrow as pa

        names = [str(n) for n in batch[self.name_column]]
        items = list(batch[self.input_column])
        # a null (the failed row of an earlier run) is this row's error; everything else is coded
        present = [i for i, item in enumerate(items) if item is not None]
        results: list[Any] = [ImageError("no data in this row")] * len(items)
        coded = self._code([_named_input(names[i], items[i]) for i in present])
        for i, result in zip(present, coded, strict=True):
            results[i] = result
        rows = []
        for name, result in zip(names, results, strict=True):
            if not isinstance(result, VaecodecError):
                try:
                    rows.append({"name": name, **self._row(result)})
                    continue
                except VaecodecError as exc:
                    result = exc
            rows.append({"name": name, "error": _one_line(result)})
        return pa.Table.from_pylist(rows, schema=_schema(self.kind))

    def _code(self, items: list[Any]) -> list[Any]:
        raise NotImplementedError

    def _row(self, result: Any) -> dict[str, Any]:
        raise NotImplementedError


def _named_input(name: str, item: Any) -> Any:
    """File bytes as a file object named after the row (so that errors name it); arrays as they are."""
    if isinstance(item, bytes | bytearray | memoryview):
        item = io.BytesIO(bytes(item))
        item.name = name
    return item


class CompressActor(_CodecActor):
    """A ``map_batches`` class: images -> .vaez rows (``name, width, height, quality, bytes, bpp,
    data, error``). Coding options as :meth:`Codec.compress_batch`; ``device`` as :class:`Codec`;
    ``threads``: torch's CPU threads. The default columns are ``read_binary_files(...,
    include_paths=True)``'s; for ``read_images(..., include_paths=True)`` they are ``image`` and
    ``path``. docs/ray.md has a whole pipeline."""

    kind = "compressed"

    def __init__(self, *, input_column: str = "bytes", name_column: str = "path",
                 quality: float | None = None, effort: int = DEFAULT_EFFORT, wiener: bool = True,
                 strip: bool = False, target_bpp: float | None = None, target_size: int | None = None,
                 target_psnr: float | None = None, model: str | None = None, device: str = "auto",
                 threads: int | None = None, max_pixels: int | None = None, batch_size: int | None = None
                 ) -> None:
        super().__init__(input_column, name_column, model, device, threads, max_pixels, batch_size)
        self.options = {"quality": quality, "effort": effort, "wiener": wiener, "strip": strip,
                        "target_bpp": target_bpp, "target_size": target_size, "target_psnr": target_psnr}

    def _code(self, items: list[Any]) -> list[Any]:
        return self.codec.compress_batch(items, batch_size=self.batch_size, on_error="return", **self.options)

    def _row(self, data: bytes) -> dict[str, Any]:
        from . import container

        header = container.unpack(data)[0]
        return {"width": header.width, "height": header.height, "quality": header.quality,
                "bytes": len(data), "bpp": 8 * len(data) / (header.width * header.height), "data": data}


class DecompressActor(_CodecActor):
    """A ``map_batches`` class: .vaez data -> image-file rows (``name, width, height, mode, bytes,
    data, error``), each image encoded as ``image_format`` (png, webp, jpeg, tiff, ...: what Pillow
    writes) with its metadata, at ``out_quality`` for the lossy formats (as the CLI's
    ``--out-quality``). Other options as :class:`CompressActor`."""

    kind = "decompressed"

    def __init__(self, *, input_column: str = "bytes", name_column: str = "path", image_format: str = "png",
                 out_quality: int | None = None, model: str | None = None, device: str = "auto",
                 threads: int | None = None, max_pixels: int | None = None, batch_size: int | None = None
                 ) -> None:
        super().__init__(input_column, name_column, model, device, threads, max_pixels, batch_size)
        self.format, self.out_quality = _image_format(image_format), out_quality

    def _code(self, items: list[Any]) -> list[Any]:
        return self.codec.decompress_batch(items, batch_size=self.batch_size, on_error="return")

    def _row(self, img: Any) -> dict[str, Any]:
        from . import image

        data = image.encode(img, self.format, self.out_quality)
        return {"width": img.width, "height": img.height, "mode": img.mode, "bytes": len(data), "data": data}


def webdataset_sample(row: dict[str, Any]) -> dict[str, Any]:
    """A .vaez row -> a WebDataset sample, for ``Dataset.map`` before ``write_webdataset``: members
    ``<key>.vaez`` (the data) and ``<key>.json`` (name, width, height, quality, bytes, bpp), the key
    being the name without its extension. Failed rows have no data: ``filter`` them out first."""
    meta = {"name": str(row["name"]), "width": int(row["width"]), "height": int(row["height"]),
            "quality": float(row["quality"]), "bytes": int(row["bytes"]), "bpp": float(row["bpp"])}
    return {"__key__": posixpath.splitext(meta["name"])[0].lstrip("/"), "vaez": row["data"], "json": meta}


def _image_format(name: str) -> str:
    """Pillow's format name for ``png``, ``.webp``, ``JPEG``...; OutputError for one it cannot write."""
    from . import image

    return image.output_format(Path("x." + name.lower().lstrip(".")))


# ---- inputs: listed on the driver ----------------------------------------------------------------


@dataclass(frozen=True)
class _Inputs:
    """What a run reads: files (paths on ``filesystem``: images, .vaez or Parquet files), the folder
    inputs they were found in, the name of every row (image or .vaez file: its path under its folder
    input, or its base name when given as a file; Parquet: the name column), and for Parquet the
    columns (name, data) read."""

    filesystem: pafs.FileSystem
    paths: list[str]
    folders: list[str]
    names: list[str]
    columns: tuple[str, str] | None = None

    @property
    def actor_columns(self) -> dict[str, str]:
        """The actors' columns: the Parquet ones, or those :func:`_read` makes of files."""
        name, data = self.columns or ("name", "bytes")
        return {"name_column": name, "input_column": data}


def _filesystem(src: str) -> tuple[pafs.FileSystem, str]:
    """A path or URI (s3://, gs://, ...) -> its pyarrow filesystem and the path on it."""
    import pyarrow.fs as pafs

    if "://" in src:
        try:
            return pafs.FileSystem.from_uri(src)
        except (ValueError, OSError) as exc:
            raise VaecodecError(f"{src}: {_one_line(exc)}") from None
    return pafs.LocalFileSystem(), os.path.abspath(src)


def _name_of(path: str, folders: Sequence[str]) -> str:
    """A file's name: its path under the deepest of ``folders`` that holds it, else its base name."""
    for folder in folders:
        if path.startswith(folder.rstrip("/") + "/"):
            return path[len(folder.rstrip("/")) + 1 :]
    return posixpath.basename(path)


def _list(srcs: list[str], wanted: Callable[[str], bool], what: str) -> _Inputs:
    """The files of ``srcs``: files as given, folders walked (subfolders too) for the ``wanted`` ones."""
    import pyarrow.fs as pafs

    filesystem, paths, folders = None, [], []
    for src in srcs:
        fs, path = _filesystem(src)
        if filesystem is not None and fs.type_name != filesystem.type_name:
            raise VaecodecError(f"{src}: all inputs must be on one filesystem ({filesystem.type_name} and "
                                f"{fs.type_name} given)")
        filesystem = fs
        try:
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.Directory:
                folders.append(path)
                paths += sorted(i.path for i in fs.get_file_info(pafs.FileSelector(path, recursive=True))
                                if i.type == pafs.FileType.File and wanted(i.path))
            elif info.type == pafs.FileType.NotFound:
                raise ImageError(f"{src}: no such file or folder")
            else:
                paths.append(path)
        except OSError as exc:
            raise VaecodecError(f"{src}: cannot list ({_one_line(exc)})") from None
    if not paths:
        raise ImageError(f"no {what} found in {', '.join(srcs)}")
    if len(set(paths)) < len(paths):
        raise VaecodecError(f"{next(p for p in paths if paths.count(p) > 1)} is given twice")
    folders.sort(key=len, reverse=True)
    return _Inputs(filesystem, paths, folders, [_name_of(p, folders) for p in paths])


def _with_names(batch: dict[str, np.ndarray], folders: list[str]) -> dict[str, np.ndarray]:
    """``read_binary_files``' rows (bytes, path) -> (bytes, name)."""
    import numpy as np

    names = np.array([_name_of(p, folders) for p in batch["path"]], dtype=object)
    return {"bytes": batch["bytes"], "name": names}


def _parquet_inputs(srcs: list[str], name_column: str, input_column: str) -> _Inputs:
    """Parquet files (folders walked for ``*.parquet``) whose rows carry a name and the data."""
    import pyarrow.dataset as pads

    inputs = _list(srcs, lambda p: p.endswith(".parquet"), "Parquet files")
    where = ", ".join(srcs)
    try:
        table = pads.dataset(inputs.paths, filesystem=inputs.filesystem, format="parquet")
        missing = [c for c in (name_column, input_column) if c not in table.schema.names]
        if missing:
            columns = ", ".join(table.schema.names)
            raise VaecodecError(f"{where}: no column {missing[0]!r} (columns: {columns})")
        names = table.to_table(columns=[name_column]).column(0).to_pylist()
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid (not Parquet, damaged) is a ValueError
        raise VaecodecError(f"{where}: cannot read Parquet ({_one_line(exc)})") from None
    if any(n is None for n in names):
        raise VaecodecError(f"{where}: column {name_column!r} has empty names")
    return _Inputs(inputs.filesystem, inputs.paths, [], [str(n) for n in names], (name_column, input_column))


def _inputs(src: str | os.PathLike | Sequence[str | os.PathLike], input_format: Format, name_column: str,
            input_column: str, wanted: Callable[[str], bool], what: str) -> _Inputs:
    srcs = [os.fspath(src)] if isinstance(src, str | os.PathLike) else [os.fspath(s) for s in src]
    if input_format == "parquet":
        return _parquet_inputs(srcs, name_column, input_column)
    if input_format != "files":
        raise VaecodecError(f"input format must be 'files' or 'parquet', got {input_format!r}")
    return _list(srcs, wanted, what)


def _read(ray: Any, inputs: _Inputs, tasks: int) -> Any:
    """The dataset of inputs, read by ``tasks`` tasks at a time (a task reads one file or more): the
    files' bytes with their names, or two columns of Parquet files."""
    tasks = min(tasks, len(inputs.paths))
    if inputs.columns is not None:
        return ray.data.read_parquet(inputs.paths, filesystem=inputs.filesystem, concurrency=tasks, **IO
                                     ).select_columns(list(inputs.columns), **IO)
    # a file removed since it was listed is left out, and reported as not read at the end
    files = ray.data.read_binary_files(inputs.paths, filesystem=inputs.filesystem, include_paths=True,
                                       ignore_missing_paths=True, concurrency=tasks, **IO)
    return files.map_batches(_with_names, fn_kwargs={"folders": inputs.folders}, batch_format="numpy", **IO)


# ---- outputs -------------------------------------------------------------------------------------


def _output_paths(inputs: _Inputs, dst: str, ext: str, force: bool) -> dict[str, Path]:
    """Each row's output file under the folder ``dst``: its name with the extension ``ext``. Refused
    before any work: a name that leaves ``dst``, two rows that map to one file, an output that is an
    input, an existing file unless ``force``."""
    inputs_here = ({os.path.normcase(os.path.realpath(p)) for p in inputs.paths}
                   if inputs.filesystem.type_name == "local" else set())
    out: dict[str, Path] = {}
    seen: dict[str, str] = {}
    for name in inputs.names:
        rel = posixpath.normpath(name)
        if not name or rel.startswith(("/", "../")) or rel in ("..", "."):
            raise OutputError(f"{name!r}: not a relative name inside the output folder")
        path = Path(dst) / Path(rel).with_suffix(ext)
        key = os.path.normcase(os.path.realpath(path))
        if key in seen:
            raise OutputError(f"{seen[key]} and {name} would both be written to {path}")
        if key in inputs_here:
            raise OutputError(f"output {path} is an input: refusing to overwrite it")
        check_writable(path, force)
        seen[key], out[name] = name, path
    return out


def _parquet_output(dst: str, force: bool) -> tuple[pafs.FileSystem, str, list[str]]:
    """The filesystem and folder of Parquet shards, and the earlier shards in it, to be replaced. A
    folder with anything in it is refused unless ``force``, and even then unless it holds Parquet
    shards only (a mistyped ``dst`` must not empty someone's folder)."""
    import pyarrow.fs as pafs

    fs, path = _filesystem(dst)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return fs, path, []
    if info.type != pafs.FileType.Directory:
        raise OutputError(f"{dst}: is a file, not a folder")
    held = [i.path for i in fs.get_file_info(pafs.FileSelector(path, recursive=True))
            if i.type == pafs.FileType.File]
    if held and not force:
        raise OutputError(f"{dst}: is not empty (use --force to replace the Parquet shards in it)")
    if any(not p.endswith(".parquet") for p in held):
        raise OutputError(f"{dst}: holds files other than Parquet shards: refusing to replace them")
    return fs, path, held


def _write_files(rows: pa.Table, where: dict[str, Path], force: bool) -> pa.Table:
    """Write each coded row's data to its file, atomically; a write that fails is that row's error."""
    import pyarrow as pa

    errors = rows.column("error").to_pylist()
    for i, (name, data) in enumerate(zip(rows.column("name").to_pylist(), rows.column("data").to_pylist(),
                                         strict=True)):
        if errors[i] is None:
            try:
                where[name].parent.mkdir(parents=True, exist_ok=True)
                write_atomic(where[name], lambda f, data=data: f.write(data), force)
            except OSError as exc:
                errors[i] = f"{where[name].parent}: cannot create folder ({exc.strerror or exc})"
            except VaecodecError as exc:
                errors[i] = _one_line(exc)
    return rows.set_column(rows.schema.get_field_index("error"), "error", pa.array(errors, pa.string()))


# ---- running -----------------------------------------------------------------------------------


@dataclass
class Summary:
    """What a run did (``kind``: "compressed" or "decompressed"): the images coded, their output
    bytes and pixels, the failures as (name, error). ``seconds`` is the run's wall time once Ray is up;
    ``startup_seconds`` the time taken to start or join Ray (0 when it was running already)."""

    kind: str
    output: str
    images: int = 0
    bytes: int = 0
    pixels: int = 0
    seconds: float = 0.0
    startup_seconds: float = 0.0
    errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return (self.images + len(self.errors)) / self.seconds if self.seconds else 0.0

    def add(self, rows: pa.Table) -> None:
        """Count the rows (at least the columns :data:`SUMMARY_COLUMNS`) of a result table."""
        for row in rows.select(SUMMARY_COLUMNS).to_pylist():
            if row["error"] is not None:
                self.errors.append((row["name"], row["error"]))
            else:
                self.images += 1
                self.bytes += row["bytes"]
                self.pixels += row["width"] * row["height"]

    def line(self) -> str:
        """The run in one line."""
        failed = f", {len(self.errors)} failed" if self.errors else ""
        bpp = f", {8 * self.bytes / self.pixels:.3f} bpp" if self.pixels and self.kind == "compressed" else ""
        return (f"{self.images} images {self.kind} -> {self.output}: {self.bytes} bytes{bpp}{failed}, "
                f"{self.seconds:.1f} s ({self.images_per_second:.2f} images/s)")


@dataclass(frozen=True)
class _Engine:
    """Where and how a run goes: the options compress_dataset and decompress_dataset share."""

    output_format: Format
    force: bool
    address: str | None
    num_actors: int | None
    num_cpus: int | None
    threads: int | None
    device: Device
    images_per_call: int | None
    shard_rows: int
    progress: bool


@contextmanager
def _connected(engine: _Engine) -> Iterator[Any]:
    """Ray, as it is when already initialized, else connected to ``engine.address`` or started on
    this machine (on ``num_cpus`` CPUs; default all), and shut down again after the run."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        quiet = {} if engine.progress else {"logging_level": logging.ERROR, "log_to_driver": False}
        try:
            if engine.address is None:
                ray.init(num_cpus=engine.num_cpus, include_dashboard=False, **quiet)
            else:
                ray.init(address=engine.address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            at = f" at {engine.address}" if engine.address else ""
            raise VaecodecError(f"cannot start Ray{at}: {_one_line(exc)}") from None
    context, logger = ray.data.DataContext.get_current(), logging.getLogger("ray.data")
    before = context.enable_progress_bars, context.print_on_execution_start, logger.level
    context.enable_progress_bars = context.print_on_execution_start = engine.progress
    if not engine.progress:
        logger.setLevel(logging.ERROR)
    try:
        yield ray
    finally:
        context.enable_progress_bars, context.print_on_execution_start, level = before
        logger.setLevel(level)
        if started:
            ray.shutdown()


@dataclass(frozen=True)
class _Pool:
    """The actors of a run: at most ``size``, each with Ray ``resources``, each a Codec on ``device``
    with ``threads`` torch threads."""

    size: int
    resources: dict[str, Any]
    device: str
    threads: int | None

    @property
    def reads(self) -> int:
        """Read tasks at a time."""
        return self.size * READS_PER_ACTOR[self.device]


def _pool(num_actors: int | None, threads: int | None, device: Device) -> _Pool:
    """Up to one actor per GPU, one GPU each, when the cluster has GPUs (unless ``device`` is "cpu"),
    else up to one per ``threads`` CPUs (default 1), ``threads`` CPUs each; ``num_actors`` caps it."""
    import ray

    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    if device == "cuda" and not gpus:
        raise VaecodecError("device 'cuda' requested but the Ray cluster has no GPUs")
    if gpus and device != "cpu":
        return _Pool(num_actors or gpus, {"num_gpus": 1}, "cuda", threads)
    threads = threads or 1
    return _Pool(num_actors or max(1, cpus // threads), {"num_cpus": threads}, "cpu", threads)


def _stage(ds: Any, actor: type[_CodecActor], pool: _Pool, images_per_call: int | None,
           options: dict[str, Any]) -> Any:
    """``ds`` coded by ``pool``'s actors, ``images_per_call`` rows per call."""
    import ray

    # a pool that grows from one actor as work queues up: one that took every CPU at the start would
    # leave none for the tasks Ray Data runs itself (listing Parquet files) and wait forever
    strategy = ray.data.ActorPoolStrategy(min_size=1, max_size=pool.size)
    options = {**options, "device": pool.device, "threads": pool.threads}
    return ds.map_batches(actor, fn_constructor_kwargs=options, compute=strategy, batch_format="numpy",
                          batch_size=images_per_call or IMAGES_PER_CALL[pool.device], **pool.resources)


def compress_stage(ds: Any, *, num_actors: int | None = None, threads: int | None = None,
                   device: Device = "auto", images_per_call: int | None = None, **options: Any) -> Any:
    """A Ray Data stage: ``ds`` (rows of image file bytes or arrays, and names) -> .vaez rows, by the
    actor pool :func:`compress_dataset` uses. ``options``: :class:`CompressActor`'s (the columns,
    quality, ...). Ray must be initialized; a pipeline of your own (``read_images``, WebDataset shards)
    goes through here."""
    return _stage(ds, CompressActor, _pool(num_actors, threads, device), images_per_call, options)


def decompress_stage(ds: Any, *, num_actors: int | None = None, threads: int | None = None,
                     device: Device = "auto", images_per_call: int | None = None, **options: Any) -> Any:
    """A Ray Data stage: .vaez rows -> image-file rows, as :func:`compress_stage`; ``options``:
    :class:`DecompressActor`'s."""
    return _stage(ds, DecompressActor, _pool(num_actors, threads, device), images_per_call, options)


def _run(actor: type[_CodecActor], engine: _Engine, inputs: _Inputs, dst: str, ext: str,
         options: dict[str, Any]) -> Summary:
    """Check the outputs, then read, code with a pool of ``actor`` and write: the part compress and
    decompress share."""
    if engine.output_format == "files":
        where = _output_paths(inputs, dst, ext, engine.force)
    elif engine.output_format == "parquet":
        out_fs, out_path, earlier = _parquet_output(dst, engine.force)
    else:
        raise VaecodecError(f"output format must be 'files' or 'parquet', got {engine.output_format!r}")
    summary, done = Summary(actor.kind, dst), set()

    def count(rows: pa.Table) -> None:
        summary.add(rows)
        done.update(rows.column("name").to_pylist())

    start = time.perf_counter()
    with _connected(engine) as ray:
        summary.startup_seconds = time.perf_counter() - start
        start = time.perf_counter()
        pool = _pool(engine.num_actors, engine.threads, engine.device)
        coded = _stage(_read(ray, inputs, pool.reads), actor, pool, engine.images_per_call,
                       {**options, **inputs.actor_columns})
        if engine.output_format == "files":
            for rows in coded.iter_batches(batch_size=None, batch_format="pyarrow"):
                count(_write_files(rows, where, engine.force))
        else:
            import pyarrow.dataset as pads

            for shard in earlier:
                out_fs.delete_file(shard)
            coded.write_parquet(out_path, filesystem=out_fs, min_rows_per_file=engine.shard_rows,
                                ray_remote_args=IO)
            shards = pads.dataset(out_path, filesystem=out_fs, format="parquet")
            count(shards.to_table(columns=SUMMARY_COLUMNS))
        summary.seconds = time.perf_counter() - start
    summary.errors += [(name, "not read: removed since it was listed") for name in inputs.names
                       if name not in done]
    return summary


def compress_dataset(
    src: str | os.PathLike | Sequence[str | os.PathLike],
    dst: str,
    *,
    quality: float | None = None,
    effort: int = DEFAULT_EFFORT,
    wiener: bool = True,
    strip: bool = False,
    target_bpp: float | None = None,
    target_size: int | None = None,
    target_psnr: float | None = None,
    input_format: Format = "files",
    name_column: str = "name",
    image_column: str = "image",
    output_format: Format = "files",
    force: bool = False,
    address: str | None = None,
    num_actors: int | None = None,
    num_cpus: int | None = None,
    threads: int | None = None,
    device: Device = "auto",
    images_per_call: int | None = None,
    shard_rows: int = 1000,
    model: str | None = None,
    max_pixels: int | None = None,
    progress: bool = True,
) -> Summary:
    """Compress images with Ray Data: for each image the bytes :meth:`Codec.compress` gives its file.

    ``src``: image files and folders (walked, subfolders too, for the image extensions), local paths
    or URIs (``s3://...``); with ``input_format="parquet"``, Parquet files or folders whose rows hold
    a name (``name_column``) and the bytes of an image file (``image_column``). ``dst``: with
    ``output_format="files"``, a folder that gets ``<name>.vaez`` per image (a folder input's tree is
    kept; ``x.png`` -> ``x.vaez``), written atomically by this process; with ``"parquet"``, a folder
    (or URI) of Parquet shards of at least ``shard_rows`` rows each (the last may have fewer), columns
    name, width, height, quality, bytes, bpp, data, error, written by the workers. Nothing existing is
    replaced without ``force``.

    Ray: the one already initialized in this process, else the cluster at ``address``, else one
    started here on ``num_cpus`` CPUs (default all) and shut down after. Up to ``num_actors`` actors
    (default: one per GPU when the cluster has GPUs and ``device`` is not "cpu", else one per
    ``threads`` CPUs, threads default 1), each with one Codec, take ``images_per_call`` images per
    call. ``progress``: Ray's progress and log lines. Coding options as :meth:`Codec.compress`. An image
    that fails is in the summary's ``errors`` (and, in Parquet, its row's ``error``).
    """
    from . import image, rate_control
    from .quality import check_effort, check_quality

    rate_control.target_of(1, quality, target_bpp, target_size, target_psnr)  # bad options: before any work
    if quality is not None:
        check_quality(quality)
    check_effort(effort)
    engine = _Engine(output_format, force, address, num_actors, num_cpus, threads, device, images_per_call,
                     shard_rows, progress)
    inputs = _inputs(src, input_format, name_column, image_column,
                     lambda p: posixpath.splitext(p)[1].lower() in image.IMAGE_EXTENSIONS, "image files")
    options = {"quality": quality, "effort": effort, "wiener": wiener, "strip": strip,
               "target_bpp": target_bpp, "target_size": target_size, "target_psnr": target_psnr,
               "model": model, "max_pixels": max_pixels}
    return _run(CompressActor, engine, inputs, dst, VAEZ, options)


def decompress_dataset(
    src: str | os.PathLike | Sequence[str | os.PathLike],
    dst: str,
    *,
    image_format: str = "png",
    out_quality: int | None = None,
    input_format: Format = "files",
    name_column: str = "name",
    data_column: str = "data",
    output_format: Format = "files",
    force: bool = False,
    address: str | None = None,
    num_actors: int | None = None,
    num_cpus: int | None = None,
    threads: int | None = None,
    device: Device = "auto",
    images_per_call: int | None = None,
    shard_rows: int = 1000,
    model: str | None = None,
    max_pixels: int | None = None,
    progress: bool = True,
) -> Summary:
    """Decompress .vaez files with Ray Data into image files: pixels and metadata as
    :meth:`Codec.decompress` gives them, encoded as ``image_format`` (png by default, lossless;
    ``out_quality`` for JPEG, AVIF and lossy WebP).

    ``src``: .vaez files and folders (walked for ``*.vaez``), or with ``input_format="parquet"`` the
    shards :func:`compress_dataset` writes (``name_column``, ``data_column``; a row that failed there
    fails here too). Outputs as :func:`compress_dataset`: ``<name>.<image_format>`` files (``x.vaez``
    -> ``x.png``) or Parquet shards (columns name, width, height, mode, bytes, data, error). Ray and
    the actors as :func:`compress_dataset`.
    """
    ext = "." + image_format.lower().lstrip(".")
    _image_format(image_format)  # a format Pillow cannot write: refused before any work
    if out_quality is not None and not 1 <= out_quality <= 100:
        raise OutputError(f"output quality must be between 1 and 100, got {out_quality}")
    engine = _Engine(output_format, force, address, num_actors, num_cpus, threads, device, images_per_call,
                     shard_rows, progress)
    inputs = _inputs(src, input_format, name_column, data_column, lambda p: p.lower().endswith(VAEZ),
                     ".vaez files")
    options = {"image_format": image_format, "out_quality": out_quality, "model": model,
               "max_pixels": max_pixels}
    return _run(DecompressActor, engine, inputs, dst, ext, options)


# ---- python -m vaecodec.raydata ----------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m vaecodec.raydata compress|decompress SRC... -o DST``: exit 0, 1 when an image
    failed or the run could not start, 2 for a usage error."""
    import click

    from .quality import EFFORT_MAX, QUALITY_MAX, QUALITY_MIN

    shared_options = (
        click.argument("src", nargs=-1, required=True),
        click.option("-o", "--output", "dst", required=True, help="Output folder (or URI, for Parquet)."),
        click.option("--format", "output_format", type=click.Choice(["files", "parquet"]), default="files",
                     show_default=True, help="One file per image, or Parquet shards."),
        click.option("--input-format", type=click.Choice(["files", "parquet"]), default="files",
                     show_default=True, help="Image (or .vaez) files and folders, or Parquet."),
        click.option("--name-column", default="name", show_default=True, help="Parquet input: the names."),
        click.option("-f", "--force", is_flag=True, help="Replace existing outputs."),
        click.option("--address", default=None, help="A running Ray cluster (default: start one here)."),
        click.option("--num-actors", type=click.IntRange(min=1), default=None,
                     help="Actors at most, one Codec each (default: one per GPU, else one per --threads "
                          "CPUs)."),
        click.option("--num-cpus", type=click.IntRange(min=1), default=None,
                     help="CPUs of a Ray started here (default: all)."),
        click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads per actor."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                     show_default=True),
        click.option("--images-per-call", type=click.IntRange(min=1), default=None,
                     help="Images per actor call (default 16 on GPUs, 1 on CPUs)."),
        click.option("--shard-rows", type=click.IntRange(min=1), default=1000, show_default=True,
                     help="Rows per Parquet shard, at least."),
        click.option("--model", default=None, metavar="WEIGHTS", help="Another weights file."),
        click.option("--max-pixels", type=click.IntRange(min=0), default=None, metavar="N",
                     help="Refuse images of more than N pixels."),
        click.option("-Q", "--quiet", is_flag=True, help="Errors only: no progress, no summary."),
    )

    def shared(command: Callable) -> Callable:
        for option in reversed(shared_options):
            command = option(command)
        return command

    def finish(run: Callable[[], Summary], quiet: bool) -> None:
        try:
            summary = run()
        except VaecodecError as exc:
            click.echo(f"vaecodec: error: {_one_line(exc)}", err=True)
            sys.exit(1)
        for name, error in summary.errors:
            click.echo(f"vaecodec: error: {error if name in error else f'{name}: {error}'}", err=True)
        if not quiet:
            click.echo(summary.line())
        sys.exit(1 if summary.errors else 0)

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    def cli() -> None:
        """vaecodec on Ray Data: images <-> .vaez on a local Ray or a cluster (docs/ray.md)."""

    @cli.command()
    @shared
    @click.option("-q", "--quality", type=click.FloatRange(QUALITY_MIN, QUALITY_MAX), default=None,
                  help="1 = smallest files ... 10 = best quality (default 7).")
    @click.option("--target-bpp", type=click.FloatRange(min=0, min_open=True), default=None, metavar="BPP")
    @click.option("--target-size", type=click.IntRange(min=1), default=None, metavar="BYTES")
    @click.option("--target-psnr", type=click.FloatRange(min=0, min_open=True), default=None, metavar="DB")
    @click.option("-e", "--effort", type=click.IntRange(0, EFFORT_MAX), default=DEFAULT_EFFORT,
                  show_default=True)
    @click.option("--no-filter", is_flag=True, help="Skip the per-image Wiener filter.")
    @click.option("--strip", is_flag=True, help="Leave out the ICC profile, EXIF and XMP.")
    @click.option("--image-column", default="image", show_default=True,
                  help="Parquet input: image file bytes.")
    def compress(quiet: bool, no_filter: bool, **kwargs: Any) -> None:
        """Images (files, folders, Parquet) -> .vaez files or Parquet shards."""
        finish(lambda: compress_dataset(wiener=not no_filter, progress=not quiet, **kwargs), quiet)

    @cli.command()
    @shared
    @click.option("--image-format", default="png", show_default=True, help="png, webp, jpeg, tiff, ...")
    @click.option("--out-quality", type=click.IntRange(1, 100), default=None, metavar="Q",
                  help="Quality of a lossy output format.")
    @click.option("--data-column", default="data", show_default=True, help="Parquet input: .vaez bytes.")
    def decompress(quiet: bool, **kwargs: Any) -> None:
        """.vaez (files, folders, compress's Parquet shards) -> image files or Parquet shards."""
        finish(lambda: decompress_dataset(progress=not quiet, **kwargs), quiet)

    cli.main(args=argv, prog_name="python -m vaecodec.raydata")


if __name__ == "__main__":
    from vaecodec.raydata import main as _main  # Ray ships vaecodec.raydata's classes, not __main__'s

    _main()
