"""Command line: ``vaecodec compress | decompress | info | models``, a thin layer over :class:`Codec`.

Conventions (docs/cli.md): an output never replaces an input of the same run, and nothing existing is
replaced without ``--force``. Without ``-o``, ``compress`` writes ``<stem>.vaez`` beside each input
and ``decompress`` writes ``<stem>.decoded.png`` (never the original's name, so a round trip needs no
``--force``); ``-o FILE`` names the one output, ``-o FOLDER/`` (an existing folder, or a name ending
in ``/``, created) takes every output, and ``-o -`` writes stdout; ``-`` as an input reads stdin.
Every problem with the command line as a whole (two inputs that map to one output, an output that is
an input, ...) is refused before any work starts. Outputs are written atomically, so an error or
Ctrl-C leaves no partial file; errors are one line on stderr; with several inputs a bad one is
reported and the rest go on.

Exit status: 0 success, 1 some file failed, 2 the command line is wrong, 70 a bug (internal error),
130 interrupted (Ctrl-C).

torch is imported only by the commands that code images (``--help``, ``--version``, ``info`` and
``models`` answer without it), once, when the codec loads.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

import click

from . import __version__, container, weights
from .errors import OutputError, VaecodecError
from .files import check_writable, read_bytes, write_atomic
from .quality import DEFAULT_EFFORT, DEFAULT_QUALITY, EFFORT_MAX, QUALITY_MAX, QUALITY_MIN

if TYPE_CHECKING:
    from .codec import Codec

STDIO = "-"
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
VAEZ = ".vaez"
# --format: name -> the extension of the outputs vaecodec names (the extension picks Pillow's format)
OUT_FORMATS = {"png": ".png", "webp": ".webp", "jpeg": ".jpg", "jpg": ".jpg", "avif": ".avif",
               "tiff": ".tif", "bmp": ".bmp", "ppm": ".ppm"}


def _one_line(msg: object) -> str:
    return " ".join(str(msg).split())


def _error(msg: str) -> None:
    click.echo(f"vaecodec: error: {_one_line(msg)}", err=True)


def _usage(msg: str) -> NoReturn:
    """A command line that cannot be run as given: one line, exit 2 (as click's own usage errors)."""
    _error(msg)
    sys.exit(EXIT_USAGE)


def _interrupted() -> NoReturn:
    _error("interrupted")
    sys.exit(EXIT_INTERRUPTED)


@dataclass(frozen=True)
class _Ui:
    """Where the messages go: summaries on stdout (stderr when stdout carries data), JSON records on
    stdout, warnings and progress on stderr, nothing but errors with ``quiet``."""

    quiet: bool = False
    json: bool = False
    data_on_stdout: bool = False

    def summary(self, text: str) -> None:
        if not (self.quiet or self.json):
            click.echo(text, err=self.data_on_stdout)

    def record(self, obj: dict) -> None:
        if self.json:
            click.echo(json.dumps(obj))

    def warn(self, name: str, msg: object) -> None:
        if not self.quiet:
            click.echo(f"vaecodec: warning: {name}: {_one_line(msg)}", err=True)

    def note(self, text: str) -> None:
        if not self.quiet:
            click.echo(text, err=True)


@contextmanager
def _warnings_to_stderr(name: str, ui: _Ui) -> Iterator[None]:
    """Every Python warning raised inside becomes one line on stderr, prefixed with ``name``; the
    warnings of a job that then fails are shown too."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                ui.warn(name, w.message)


# ---- planning: inputs -> (input, output) jobs, checked before any work --------------------------


@dataclass(frozen=True)
class _Job:
    src: Path | None  # None: stdin
    dst: Path | None  # None: stdout
    make_folder: bool = False  # dst lies under -o FOLDER/: create its folder when writing

    @property
    def src_name(self) -> str:
        return "<stdin>" if self.src is None else str(self.src)

    @property
    def dst_name(self) -> str:
        return "<stdout>" if self.dst is None else str(self.dst)


@dataclass(frozen=True)
class _Naming:
    """How one command names its outputs."""

    beside: Callable[[Path], Path]  # an input -> its output beside it (no -o)
    in_folder: Callable[[Path], Path]  # an input's path relative to -o FOLDER -> the output's
    wanted: Callable[[Path], bool]  # the files -r takes from a folder
    what: str  # what -r looks for, for messages


def _is_folder_output(output: str) -> bool:
    return output.endswith(("/", os.sep)) or Path(output).is_dir()


def _walk(folder: Path, wanted: Callable[[Path], bool]) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [Path(root) / f for f in sorted(files) if wanted(Path(f))]
    return found


def _plan(inputs: tuple[str, ...], output: str | None, recursive: bool, naming: _Naming, ui: _Ui
          ) -> list[_Job]:
    """The jobs a command line asks for; a usage error (exit 2) for anything that cannot be run as
    given, before any work is done and whatever --force says."""
    if inputs.count(STDIO) > 1:
        _usage("- (stdin) is given twice")
    folders = [raw for raw in inputs if raw != STDIO and Path(raw).is_dir()]
    if folders and not recursive:
        _usage(f"{folders[0]}: is a folder (use -r to code the {naming.what} in it)")
    folder_out = output not in (None, STDIO) and _is_folder_output(output)
    several = len(inputs) > 1 or bool(folders)
    if output == STDIO and several:
        _usage("-o - writes one output: give one input file")
    if several and output is not None and not folder_out:
        _usage(f"with several inputs or a folder, -o must be a folder (an existing one, or a name ending "
               f"in / to create it): {output}")
    if folder_out and Path(output).exists() and not Path(output).is_dir():
        _usage(f"-o {output}: is a file, not a folder")
    jobs = []
    for raw in inputs:
        if raw == STDIO:
            if output is None or folder_out:
                _usage("an output cannot be named after stdin: give -o FILE or -o -")
            jobs.append(_Job(None, None if output == STDIO else Path(output)))
            continue
        src = Path(raw)
        if src.is_dir():
            found = _walk(src, naming.wanted)
            if not found:
                ui.warn(str(src), f"no {naming.what} found in it")
            for f in found:
                if folder_out:
                    jobs.append(_Job(f, Path(output) / naming.in_folder(f.relative_to(src)), True))
                else:
                    jobs.append(_Job(f, naming.beside(f)))
        elif output is None:
            jobs.append(_Job(src, naming.beside(src)))
        elif output == STDIO:
            jobs.append(_Job(src, None))
        elif folder_out:
            jobs.append(_Job(src, Path(output) / naming.in_folder(Path(src.name)), True))
        else:
            jobs.append(_Job(src, Path(output)))
    if not jobs:
        _error(f"no {naming.what} to code")
        sys.exit(EXIT_FAILED)
    _check_outputs(jobs)
    return jobs


def _identity(path: Path) -> tuple:
    """Which file a path names: its inode when it exists (so hard links match), else the resolved path
    (symlinks and ``..`` followed)."""
    try:
        st = path.stat()
        return (st.st_dev, st.st_ino)
    except OSError:
        return (os.path.normcase(path.resolve()),)


def _check_outputs(jobs: list[_Job]) -> None:
    """Refuse an output that is an input of the run, and two inputs that map to one output."""
    inputs = {}
    for job in jobs:
        if job.src is not None:
            inputs.setdefault(_identity(job.src), job)
            inputs.setdefault((os.path.normcase(job.src.resolve()),), job)
    outputs: dict[tuple, _Job] = {}
    for job in jobs:
        if job.dst is None:
            continue
        ids = [_identity(job.dst), (os.path.normcase(job.dst.resolve()),)]
        clash = next((inputs[i] for i in ids if i in inputs), None)
        if clash is not None:
            _usage(f"output {job.dst} is the input {clash.src_name}: refusing to overwrite an input "
                   "(even with --force); choose another -o")
        key = ids[1]
        if key in outputs:
            first = outputs[key]
            if first.src is not None and job.src is not None and _identity(first.src) == _identity(job.src):
                _usage(f"{job.src_name} is given twice")
            _usage(f"{first.src_name} and {job.src_name} would both be written to {job.dst}: "
                   "rename one, or code them into different folders")
        outputs[key] = job


# ---- running jobs ------------------------------------------------------------------------------


def _stdio(name: str) -> BinaryIO:
    """The binary stdin or stdout (as click's test runner replaces them too)."""
    stream = getattr(sys, name)
    return getattr(stream, "buffer", stream)


def _read_input(job: _Job) -> bytes | Path:
    return _stdio("stdin").read() if job.src is None else job.src


def _check_output(job: _Job, force: bool) -> None:
    """Refuse, before the work, an output that cannot be written."""
    if job.dst is None:
        return
    check_writable(job.dst, force)
    parent = job.dst.parent
    if job.make_folder and not parent.exists():
        return  # created when written
    if not parent.is_dir():
        raise OutputError(f"{job.dst}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{job.dst}: folder {parent} is not writable")


def _write(job: _Job, data: bytes, force: bool) -> None:
    """Write an output atomically (a file) or at once (stdout)."""
    if job.dst is None:
        sys.stdout.flush()
        out = _stdio("stdout")
        out.write(data)
        out.flush()
        return
    try:
        if job.make_folder:
            job.dst.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(job.dst, lambda f: f.write(data), force)
    except OSError as exc:
        raise OutputError(f"{job.dst}: cannot write ({exc.strerror or exc})") from None


_RECORD_KEYS = ("bytes", "bpp", "quality", "width", "height", "seconds")


@dataclass
class _Outcome:
    """What became of one job: its record fields and summary line, or its error; and the warnings
    it raised (shown before its line). Made where the job ran, in a worker process or here."""

    fields: dict | None = None
    summary: str = ""
    error: str | None = None
    warnings: tuple[str, ...] = ()


def _attempt(fn: Callable[..., tuple[dict, str]], *args: Any) -> _Outcome:
    """``fn(*args)`` as an outcome: a VaecodecError is the job's error, warnings are kept."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fields, summary = fn(*args)
            outcome = _Outcome(fields, summary)
        except VaecodecError as exc:
            outcome = _Outcome(error=_one_line(exc))
    outcome.warnings = tuple(_one_line(w.message) for w in caught)
    return outcome


def _run_all(jobs: list[_Job], outcomes: Iterator[_Outcome], ui: _Ui) -> None:
    """Report each job's outcome as it comes: one summary line (or JSON record) each, errors as one
    line; exit 1 if any failed, 130 on Ctrl-C (atomic writes leave no partial file)."""
    failed = 0
    bar = None
    if len(jobs) > 1 and not ui.quiet:
        bar = click.progressbar(length=len(jobs), label="coding", file=sys.stderr)
    try:
        for job, outcome in zip(jobs, outcomes, strict=True):
            record: dict[str, Any] = {"input": STDIO if job.src is None else str(job.src),
                                      "output": STDIO if job.dst is None else str(job.dst),
                                      **dict.fromkeys(_RECORD_KEYS), "error": None}
            for message in outcome.warnings:
                ui.warn(job.src_name, message)
            if outcome.error is None:
                record.update(outcome.fields or {})
                ui.summary(outcome.summary)
            else:
                msg = outcome.error if job.src_name in outcome.error else f"{job.src_name}: {outcome.error}"
                _error(msg)
                record["error"] = msg
                failed += 1
            ui.record(record)
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:
        _interrupted()
    except VaecodecError as exc:  # the run as a whole: a worker could not load the model, or died
        _error(str(exc))
        sys.exit(EXIT_FAILED)
    finally:
        getattr(outcomes, "close", lambda: None)()  # stops the workers of a run cut short
    if bar is not None:
        bar.render_finish()
        ui.note(f"{len(jobs) - failed} of {len(jobs)} files done")
    if failed:
        sys.exit(EXIT_FAILED)


@dataclass(frozen=True)
class _Engine:
    """Where the jobs of a coding command run: the codec's settings, and how many worker processes
    (1: here)."""

    model: str | None
    device: str
    threads: int | None
    max_pixels: int | None
    jobs: int
    precision: str | None


def _run_jobs(codec: Codec, work: tuple[list[_Job], Callable, object]) -> list[_Outcome]:
    """A chunk of jobs, in a worker process (:mod:`vaecodec.pipeline`) or here."""
    jobs, fn, options = work
    return [_attempt(fn, codec, job, options) for job in jobs]


def _workers(jobs: int | None, inputs: tuple[str, ...]) -> int:
    """-j as given, else one worker per core when there may be several files (a folder counts), else
    1 (one image is coded fastest by one process using every core)."""
    if jobs is not None:
        return jobs
    from .pipeline import cores

    several = len(inputs) > 1 or any(raw != STDIO and Path(raw).is_dir() for raw in inputs)
    return cores() if several else 1


def _outcomes(jobs: list[_Job], fn: Callable[[Codec, _Job, Any], tuple[dict, str]], options: object,
              engine: _Engine, ui: _Ui) -> Iterator[_Outcome]:
    """Run ``fn(codec, job, options)`` for every job, here or in ``engine.jobs`` worker processes
    that each load the model once, and yield the outcomes in job order."""
    workers = min(engine.jobs, len(jobs))
    if workers == 1:
        codec = _load_codec(engine.model, engine.device, engine.threads, ui, engine.max_pixels,
                            engine.precision)
        return (_attempt(fn, codec, job, options) for job in jobs)
    from . import pipeline

    spec = pipeline.CodecSpec(engine.model, engine.device, engine.max_pixels,
                              pipeline.threads_per_worker(workers, engine.threads), engine.precision)

    def run() -> Iterator[_Outcome]:
        with pipeline.Pool(spec, workers) as pool:
            for done in pool.map(_run_jobs, ((chunk, fn, options) for chunk in pipeline.chunks(jobs, 1))):
                yield from done

    return run()


# one load per (model, device, pixel limit) and process: main may be invoked many times
_CODECS: dict[tuple, Codec] = {}


def _load_codec(model: str | None, device: str, threads: int | None, ui: _Ui, max_pixels: int | None = None,
                precision: str | None = None) -> Codec:
    from .codec import Codec  # imports torch

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    key = (model, device, max_pixels or None, precision)  # 0 and None both mean the format's limit
    try:
        if key not in _CODECS:
            with _warnings_to_stderr("model", ui):
                _CODECS[key] = Codec(model, device, max_pixels=max_pixels, precision=precision)
        return _CODECS[key]
    except VaecodecError as exc:
        _error(str(exc))
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        _interrupted()


def _check_stdio(inputs: tuple[str, ...], output: str | None, as_json: bool) -> None:
    if STDIO in inputs and _stdio("stdin").isatty():
        _usage("- reads stdin, which is a terminal: pipe or redirect a file into it")
    if output == STDIO:
        if as_json:
            _usage("--json writes to stdout, which -o - takes for the data: use -o FILE")
        if _stdio("stdout").isatty():
            _usage("-o - would write binary data to the terminal: redirect or pipe stdout")


def _elapsed(start: float) -> float:
    return round(time.perf_counter() - start, 3)


# ---- options -----------------------------------------------------------------------------------


class _ByteSize(click.ParamType):
    """A size in bytes: 1500, 20k (x 1000), 1.5M (x 1000000)."""

    name = "BYTES"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        scale = {"k": 1000, "K": 1000, "M": 1000_000}.get(text[-1:], 1)
        try:
            number = float(text[:-1]) if scale > 1 else int(text)
        except ValueError:
            self.fail(f"{value!r} is not a size in bytes (examples: 1500, 20k, 1.5M)", param, ctx)
        size = math.floor(number * scale) if math.isfinite(number) else 0
        if size < 1:
            self.fail(f"{value!r} must be at least 1 byte", param, ctx)
        return size


_POSITIVE = click.FloatRange(min=0, min_open=True)

device_option = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                             show_default=True, help="Where to run the networks.")
force_option = click.option("--force", "-f", is_flag=True,
                            help="Replace existing outputs (never an input of the same run).")
model_option = click.option("--model", default=None, metavar="WEIGHTS",
                            help="A weights file to use instead of the shipped model (a training export).")
recursive_option = click.option("-r", "--recursive", is_flag=True,
                                help="Code the files in folder inputs, subfolders too; with -o FOLDER/ the "
                                     "folder tree is kept under it.")
threads_option = click.option("--threads", type=click.IntRange(min=1), default=None, metavar="N",
                              help="CPU threads for the networks, per worker (default: the cores, shared "
                                   "out among the workers).")
precision_option = click.option(
    "--precision", type=click.Choice(["float32", "bfloat16", "auto"]), default=None,
    help="Precision of the synthesis (decoding, and the encoder's filter fit): float32 (default; "
         "pixels agree across machines within a grey level on a fraction of a percent), bfloat16 "
         "(about twice as fast on CPUs with native bfloat16, pixels differ more; docs/format.md), "
         "auto (bfloat16 where native).")
jobs_option = click.option("-j", "--jobs", type=click.IntRange(min=1), default=None, metavar="N",
                           help="Worker processes, each with the model loaded once (default: one per CPU "
                                "core when there are several files, else 1).")
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON object per file on stdout (and nothing else there).")
quiet_option = click.option("-Q", "--quiet", is_flag=True, help="Print errors only.")
max_pixels_option = click.option("--max-pixels", type=click.IntRange(min=0), default=None, metavar="N",
                                 help=f"Refuse images of more than N pixels (a .vaez file's declared size is "
                                      f"checked before decoding); 0 = the format's limit "
                                      f"({container.MAX_PIXELS}), also the default.")


def coding_options(command: Callable) -> Callable:
    """The options compress and decompress share."""
    for option in reversed((recursive_option, jobs_option, json_option, quiet_option, threads_option,
                            device_option, precision_option, force_option, model_option,
                            max_pixels_option)):
        command = option(command)
    return command


def _output_option(default_name: str) -> Callable:
    return click.option("-o", "--output", metavar="FILE|FOLDER/|-",
                        help=f"Output file (one input), folder (an existing one, or a name ending in / to "
                             f"create it) or - for stdout. Default: {default_name} beside each input.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vaecodec")
def main() -> None:
    """vaecodec: learned image compression. Images -> .vaez -> images.

    \b
    Exit status: 0 success, 1 a file failed, 2 usage error, 70 internal error, 130 interrupted.
    Shell completion (bash; zsh_source, fish_source for the others; see docs/cli.md):
        eval "$(_VAECODEC_COMPLETE=bash_source vaecodec)"
    """


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@_output_option("<stem>.vaez")
@click.option("-q", "--quality", type=click.FloatRange(QUALITY_MIN, QUALITY_MAX), default=None,
              help=f"{QUALITY_MIN:g} = smallest files ... {QUALITY_MAX:g} = best quality; fractions allowed "
                   f"(default {DEFAULT_QUALITY:g}).")
@click.option("--target-bpp", type=_POSITIVE, default=None, metavar="BPP",
              help="Instead of -q: the best quality whose file has at most BPP bits per pixel.")
@click.option("--target-size", type=_ByteSize(), default=None,
              help="Instead of -q: the best quality whose file fits in BYTES (1500, 20k = 20000, 1.5M).")
@click.option("--target-psnr", type=_POSITIVE, default=None, metavar="DB",
              help="Instead of -q: the smallest file whose decoded image reaches DB dB PSNR.")
@click.option("-e", "--effort", type=click.IntRange(0, EFFORT_MAX), default=DEFAULT_EFFORT, show_default=True,
              help="Encoder effort: 0 = fastest; 1 and 2 search for latents that cost fewer bits for "
                   "the same quality, at many times the encoding time. Decoding is unchanged.")
@click.option("--no-filter", is_flag=True,
              help="Do not fit and send the per-image Wiener filter: faster encoding (the encoder "
                   "skips running the decoder), slightly larger files for the same quality.")
@click.option("--strip", is_flag=True, help="Leave out the ICC profile, EXIF and XMP.")
@coding_options
def compress(inputs: tuple[str, ...], output: str | None, quality: float | None, target_bpp: float | None,
             target_size: int | None, target_psnr: float | None, effort: int, no_filter: bool, strip: bool,
             recursive: bool, jobs: int | None, as_json: bool, quiet: bool, threads: int | None, device: str,
             precision: str | None, force: bool, model: str | None, max_pixels: int | None) -> None:
    """Compress images (PNG, JPEG, WebP, ... anything Pillow reads) to .vaez files.

    \b
    vaecodec compress photo.png               -> photo.vaez
    vaecodec compress *.png -o coded/         -> coded/<stem>.vaez (folder created)
    vaecodec compress -r photos -o coded/     -> the tree of photos/ under coded/
    cat photo.png | vaecodec compress - -o -  -> stdin to stdout

    Stdin (-) needs -o FILE or -o -. An -o FILE not named .vaez is written with a warning.
    Nothing existing is replaced without --force, and an input never is.
    """
    given = [name for name, value in (("--target-bpp", target_bpp), ("--target-size", target_size),
                                      ("--target-psnr", target_psnr), ("--quality", quality))
             if value is not None]
    if len(given) > 1:
        _usage(f"{' and '.join(given)} exclude each other: give one")
    _check_stdio(inputs, output, as_json)
    ui = _Ui(quiet, as_json, output == STDIO)
    from . import image  # Pillow and numpy, no torch

    naming = _Naming(beside=lambda p: p.with_suffix(VAEZ), in_folder=lambda rel: rel.with_suffix(VAEZ),
                     wanted=lambda p: p.suffix.lower() in image.IMAGE_EXTENSIONS, what="image files")
    plan = _plan(inputs, output, recursive, naming, ui)
    for job in plan:
        if job.dst is not None and job.dst.suffix.lower() != VAEZ:
            ui.warn(str(job.dst), "a .vaez file named without the .vaez extension")
    options = _CompressOptions(quality, effort, not no_filter, strip, target_bpp, target_size, target_psnr,
                               force)
    engine = _Engine(model, device, threads, max_pixels, _workers(jobs, inputs), precision)
    _run_all(plan, _outcomes(plan, _compress_job, options, engine, ui), ui)


@dataclass(frozen=True)
class _CompressOptions:
    quality: float | None
    effort: int
    wiener: bool
    strip: bool
    target_bpp: float | None
    target_size: int | None
    target_psnr: float | None
    force: bool


def _compress_job(codec: Codec, job: _Job, o: _CompressOptions) -> tuple[dict, str]:
    from . import image

    _check_output(job, o.force)
    start = time.perf_counter()
    pic = image.load(_read_input(job), codec.max_pixels)
    data = codec.compress(pic, o.quality, o.effort, wiener=o.wiener, strip=o.strip, target_bpp=o.target_bpp,
                          target_size=o.target_size, target_psnr=o.target_psnr)
    _write(job, data, o.force)
    (w, h), q = pic.size, container.unpack(data)[0].quality
    fields = {"bytes": len(data), "bpp": round(8 * len(data) / (w * h), 4), "quality": q, "width": w,
              "height": h, "seconds": _elapsed(start)}
    return fields, (f"{job.src_name} -> {job.dst_name}: {w}x{h}, quality {q:g}, {len(data)} bytes, "
                    f"{fields['bpp']:.3f} bpp, {fields['seconds']:.2f} s")


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@_output_option("<stem>.decoded.png")
@click.option("--format", "out_format", type=click.Choice(sorted(OUT_FORMATS), case_sensitive=False),
              default=None, help="Output format for -o - and for the names vaecodec makes (default png); "
                                  "with -o FILE the extension decides.")
@click.option("--out-quality", type=click.IntRange(1, 100), default=None, metavar="Q",
              help="Quality 1..100 of a lossy output format (JPEG, AVIF; WebP becomes lossy with it).")
@coding_options
def decompress(inputs: tuple[str, ...], output: str | None, out_format: str | None, out_quality: int | None,
               recursive: bool, jobs: int | None, as_json: bool, quiet: bool, threads: int | None,
               device: str, precision: str | None, force: bool, model: str | None, max_pixels: int | None
               ) -> None:
    """Decompress .vaez files to images; an output file's extension picks its format.

    \b
    vaecodec decompress photo.vaez            -> photo.decoded.png (never photo.png)
    vaecodec decompress photo.vaez -o p.webp  -> p.webp (lossless WebP)
    vaecodec decompress *.vaez -o out/        -> out/<stem>.png (folder created)
    vaecodec decompress -r coded -o out/      -> the tree of coded/ under out/
    vaecodec decompress - -o - < x.vaez > x.png

    PNG, TIFF and WebP (without --out-quality) are lossless; JPEG and AVIF re-encode the decoded
    image lossily (a warning says so). Stdin (-) needs -o FILE or -o -. Nothing existing is
    replaced without --force, and an input never is.
    """
    _check_stdio(inputs, output, as_json)
    ui = _Ui(quiet, as_json, output == STDIO)
    from . import image  # Pillow and numpy, no torch

    ext = OUT_FORMATS[(out_format or "png").lower()]
    try:
        default_fmt = image.output_format(Path("x" + ext))
    except VaecodecError as exc:
        _error(f"--format {out_format}: {exc}")
        sys.exit(EXIT_FAILED)
    if out_format is not None and output not in (None, STDIO) and not _is_folder_output(output):
        try:
            fmt = image.output_format(Path(output))
        except VaecodecError:
            fmt = None
        if fmt != default_fmt:
            _usage(f"--format {out_format} does not match the extension of -o {output}")
    naming = _Naming(beside=lambda p: p.with_name(f"{p.stem}.decoded{ext}"),
                     in_folder=lambda rel: rel.with_suffix(ext),
                     wanted=lambda p: p.suffix.lower() == VAEZ, what=".vaez files")
    plan = _plan(inputs, output, recursive, naming, ui)
    engine = _Engine(model, device, threads, max_pixels, _workers(jobs, inputs), precision)
    options = _DecompressOptions(default_fmt, out_quality, force)
    _run_all(plan, _outcomes(plan, _decompress_job, options, engine, ui), ui)


@dataclass(frozen=True)
class _DecompressOptions:
    default_format: str  # of the outputs vaecodec names, and of stdout
    out_quality: int | None
    force: bool


def _decompress_job(codec: Codec, job: _Job, o: _DecompressOptions) -> tuple[dict, str]:
    from . import image

    fmt = o.default_format if job.dst is None else image.output_format(job.dst)
    if o.out_quality is not None and not (fmt in image.LOSSY or fmt == "WEBP"):
        warnings.warn(f"--out-quality has no effect on {fmt} output (lossless)", stacklevel=1)
    _check_output(job, o.force)
    start = time.perf_counter()
    raw = read_bytes(_read_input(job))
    header = container.unpack(raw)[0]
    img = codec.decompress(raw)
    _write(job, image.encode(img, fmt, o.out_quality, job.dst_name), o.force)
    w, h = img.size
    fields = {"bytes": len(raw), "bpp": round(8 * len(raw) / (w * h), 4), "quality": header.quality,
              "width": w, "height": h, "seconds": _elapsed(start)}
    return fields, (f"{job.src_name} -> {job.dst_name}: {w}x{h} {img.mode}, quality {header.quality:g}, "
                    f"{fields['seconds']:.2f} s")


@main.command()
@click.argument("inputs", nargs=-1, required=True)
def info(inputs: tuple[str, ...]) -> None:
    """Show the header of .vaez files (the checksum is verified too); - reads stdin."""
    ui = _Ui()

    def job_fn(job: _Job) -> tuple[dict, str]:
        data = read_bytes(_read_input(job))
        header, _ = container.unpack(data)
        bpp = 8 * len(data) / (header.width * header.height)
        return {}, (f"{job.src_name}: {header.width}x{header.height} {header.mode}, "
                    f"quality {header.quality:g}, model {header.model_id.hex()}, "
                    f"format {container.FORMAT_VERSION}, {len(data)} bytes, {bpp:.3f} bpp")

    jobs = [_Job(None if raw == STDIO else Path(raw), None) for raw in inputs]
    _run_all(jobs, (_attempt(job_fn, job) for job in jobs), ui)


@main.command()
def models() -> None:
    """List the shipped model: name, model id (what a .vaez file names) and size; the file is
    verified against its id."""
    try:
        for name, path in weights.shipped().items():
            w = weights.read(path)
            default = " (default)" if name == weights.DEFAULT_MODEL else ""
            click.echo(f"{name}{default}: model {w.model_id.hex()}, {path.stat().st_size / 1e6:.1f} MB")
    except VaecodecError as exc:
        _error(str(exc))
        sys.exit(EXIT_FAILED)


from .cli_latent import register  # noqa: E402  (it builds on the helpers above)

register(main)  # analyze, scan, interpolate, sample


def entry() -> None:
    """Console-script entry point: user errors are one line; Ctrl-C exits 130 (not click's
    "Aborted!" and 1); bugs say so (VAECODEC_DEBUG=1 shows the traceback) instead of dumping one on
    users."""
    try:
        code = main.main(prog_name="vaecodec", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        _interrupted()
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - last-resort guard for the CLI
        if os.environ.get("VAECODEC_DEBUG"):
            raise
        _error(f"internal error: {type(exc).__name__}: {exc} (set VAECODEC_DEBUG=1 for details)")
        sys.exit(70)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    entry()
