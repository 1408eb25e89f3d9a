"""Command line: ``vaecodec compress | decompress | info | models``, a thin layer over :class:`Codec`.

Conventions (as cjxl/avifenc users expect): outputs go next to the inputs with the extension
swapped unless ``-o`` names a file (one input) or a folder (several inputs); nothing is overwritten
without ``--force``; outputs are written atomically, so an error or Ctrl-C leaves no partial file;
errors are one line on stderr; with several inputs a bad one is reported and the rest go on, and the
exit status is 1 if any failed.

torch is imported only by the commands that code images (``--help``, ``--version``, ``info`` and
``models`` answer without it), once, when the codec loads.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import __version__, container, weights
from .errors import VaecodecError
from .files import check_writable, read_bytes, write_atomic
from .quality import DEFAULT_EFFORT, DEFAULT_QUALITY, EFFORT_MAX, QUALITY_MAX, QUALITY_MIN

if TYPE_CHECKING:
    from .codec import Codec


def _error(msg: str) -> None:
    click.echo(f"vaecodec: error: {msg}", err=True)


@contextmanager
def _warnings_to_stderr(name: str) -> Iterator[None]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        click.echo(f"vaecodec: warning: {name}: {w.message}", err=True)


def _outputs(inputs: tuple[Path, ...], output: Path | None, suffix: str) -> list[Path]:
    """Output path for each input: -o FILE (one input), -o FOLDER, or next to the input."""
    if output is None:
        return [p.with_suffix(suffix) for p in inputs]
    if len(inputs) == 1 and not output.is_dir():
        return [output]
    if not output.is_dir():
        raise click.UsageError(f"with several inputs, -o must be an existing folder: {output}")
    return [output / p.with_suffix(suffix).name for p in inputs]


def _load_codec(model: str | None, device: str) -> Codec:
    from .codec import Codec  # imports torch

    try:
        return Codec(model, device)
    except VaecodecError as exc:
        _error(str(exc))
        sys.exit(1)


def _run_all(pairs: list[tuple[Path, Path]], job: Callable[[Path, Path], str]) -> None:
    """Run job on each (input, output); one summary line each; exit 1 if any failed."""
    failed = 0
    bar = click.progressbar(length=len(pairs), label="coding", file=sys.stderr) if len(pairs) > 1 else None
    for src, dst in pairs:
        try:
            with _warnings_to_stderr(str(src)):
                summary = job(src, dst)
            click.echo(summary)
        except VaecodecError as exc:
            msg = str(exc)
            _error(msg if str(src) in msg else f"{src}: {msg}")
            failed += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.render_finish()
        click.echo(f"{len(pairs) - failed} of {len(pairs)} files done", err=True)
    if failed:
        sys.exit(1)


device_option = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                             show_default=True, help="Where to run the networks.")
force_option = click.option("--force", "-f", is_flag=True, help="Overwrite existing outputs.")
output_option = click.option("-o", "--output", type=click.Path(path_type=Path),
                             help="Output file (one input) or existing folder (several inputs).")
model_option = click.option("--model", default=None, metavar="WEIGHTS",
                            help="A weights file to use instead of the shipped model (a training export).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vaecodec")
def main() -> None:
    """vaecodec: learned image compression. Images -> .vaez -> images."""


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@output_option
@click.option("-q", "--quality", type=click.FloatRange(QUALITY_MIN, QUALITY_MAX), default=DEFAULT_QUALITY,
              show_default=True, help="1 = smallest files ... 10 = best quality; fractions allowed.")
@click.option("-e", "--effort", type=click.IntRange(0, EFFORT_MAX), default=DEFAULT_EFFORT, show_default=True,
              help="Encoder effort: 0 = fastest; 1 and 2 search for latents that cost fewer bits for "
                   "the same quality, at many times the encoding time. Decoding is unchanged.")
@click.option("--no-filter", is_flag=True,
              help="Do not fit and send the per-image Wiener filter: faster encoding (the encoder "
                   "skips running the decoder), slightly larger files for the same quality.")
@device_option
@force_option
@model_option
def compress(inputs: tuple[Path, ...], output: Path | None, quality: float, effort: int, no_filter: bool,
             device: str, force: bool, model: str | None) -> None:
    """Compress images (PNG, JPEG, WebP, ... anything Pillow reads) to .vaez files."""
    pairs = list(zip(inputs, _outputs(inputs, output, ".vaez"), strict=True))
    codec = _load_codec(model, device)
    from . import image

    def job(src: Path, dst: Path) -> str:
        check_writable(dst, force)
        start = time.perf_counter()
        pic = image.load(src)
        data = codec.compress(pic, quality, effort, wiener=not no_filter)
        write_atomic(dst, lambda f: f.write(data), force)
        w, h = pic.size
        return (f"{src} -> {dst}: {w}x{h}, {len(data)} bytes, {8 * len(data) / (w * h):.3f} bpp, "
                f"{time.perf_counter() - start:.2f} s")

    _run_all(pairs, job)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@output_option
@device_option
@force_option
@model_option
def decompress(inputs: tuple[Path, ...], output: Path | None, device: str, force: bool,
               model: str | None) -> None:
    """Decompress .vaez files; the output's extension picks its format (default .png)."""
    pairs = list(zip(inputs, _outputs(inputs, output, ".png"), strict=True))
    codec = _load_codec(model, device)
    from . import image

    def job(src: Path, dst: Path) -> str:
        image.output_format(dst)
        check_writable(dst, force)
        start = time.perf_counter()
        img = codec.decompress(src)
        image.save(img, dst, force)
        return f"{src} -> {dst}: {img.width}x{img.height} {img.mode}, {time.perf_counter() - start:.2f} s"

    _run_all(pairs, job)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
def info(inputs: tuple[Path, ...]) -> None:
    """Show the header of .vaez files (the checksum is verified too)."""

    def job(src: Path, _dst: Path) -> str:
        data = read_bytes(src)
        header, _ = container.unpack(data)
        bpp = 8 * len(data) / (header.width * header.height)
        return (f"{src}: {header.width}x{header.height} {header.mode}, quality {header.quality:g}, "
                f"model {header.model_id.hex()}, format {container.FORMAT_VERSION}, {len(data)} bytes, "
                f"{bpp:.3f} bpp")

    _run_all([(p, p) for p in inputs], job)


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
        sys.exit(1)


def entry() -> None:
    """Console-script entry point: user errors are one line; bugs say so (VAECODEC_DEBUG=1 shows
    the traceback) instead of dumping one on users."""
    try:
        main(standalone_mode=True)
    except KeyboardInterrupt:
        _error("interrupted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - last-resort guard for the CLI
        if os.environ.get("VAECODEC_DEBUG"):
            raise
        _error(f"internal error: {type(exc).__name__}: {exc} (set VAECODEC_DEBUG=1 for details)")
        sys.exit(70)


if __name__ == "__main__":
    entry()
