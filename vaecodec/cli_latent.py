"""Command line of the latent tools (:mod:`vaecodec.latent_tools`): ``analyze``, ``scan``,
``interpolate`` and ``sample``, registered on the ``vaecodec`` group by :mod:`vaecodec.cli`.

They follow the conventions of ``compress`` and ``decompress`` (docs/cli.md): outputs are written
atomically and never replace an existing file without ``--force`` or an input ever; errors are one
line on stderr; exit status 0 success, 1 a file failed (``scan`` goes on with the others), 2 a usage
error, 130 interrupted. torch loads only once a command runs.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from .cli import (
    EXIT_FAILED,
    _check_output,
    _check_outputs,
    _error,
    _interrupted,
    _Job,
    _load_codec,
    _one_line,
    _Ui,
    _warnings_to_stderr,
    _write,
    device_option,
    force_option,
    model_option,
    quiet_option,
    threads_option,
)
from .errors import VaecodecError
from .quality import DEFAULT_QUALITY, EFFORT_MAX, QUALITY_MAX, QUALITY_MIN

_QUALITY = click.FloatRange(QUALITY_MIN, QUALITY_MAX)


def _common(command: Any) -> Any:
    """The options every latent command shares."""
    for option in reversed((quiet_option, threads_option, device_option, force_option, model_option)):
        command = option(command)
    return command


def _png(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def _fail(exc: VaecodecError, name: str | None = None) -> None:
    msg = _one_line(exc)
    _error(msg if name is None or name in msg else f"{name}: {msg}")
    sys.exit(EXIT_FAILED)


def _output_job(src: tuple[str, ...], output: str, force: bool) -> _Job:
    """The one output file of a command, refused (exit 2) if it is one of the inputs and (exit 1) if
    it exists without --force or its folder is missing."""
    jobs = [_Job(Path(s), Path(output) if i == 0 else None) for i, s in enumerate(src)]
    _check_outputs(jobs)
    try:
        _check_output(jobs[0], force)
    except VaecodecError as exc:
        _fail(exc)
    return jobs[0]


@click.command()
@click.argument("input", metavar="IMAGE")
@click.option("-o", "--output", metavar="MAP.png", default=None, help="Write the heat map here (PNG).")
@click.option("-q", "--quality", type=_QUALITY, default=DEFAULT_QUALITY, show_default=True,
              help="The quality to code at.")
@click.option("-e", "--effort", type=click.IntRange(0, EFFORT_MAX), default=0, show_default=True,
              help="Encoder effort, as for compress.")
@click.option("--no-filter", is_flag=True, help="Code without the Wiener filter, as compress --no-filter.")
@click.option("--json", "as_json", is_flag=True, help="Print the totals as one JSON object on stdout.")
@_common
def analyze(input: str, output: str | None, quality: float, effort: int, no_filter: bool, as_json: bool,
            quiet: bool, threads: int | None, device: str, force: bool, model: str | None) -> None:
    """Where the bits go: the exact bits the entropy model spends on each 16x16 block.

    \b
    vaecodec analyze photo.png                 -> the totals
    vaecodec analyze photo.png -o map.png      -> the image and its heat map in bits per pixel
    vaecodec analyze photo.png --json          -> bits in y, z, side information, per channel

    The image is compressed as compress would (the same -q, -e, --no-filter); the map is of the
    file's own latents, so its total is the file's ANS and escape streams up to the coder's flush.
    """
    from .latent_tools import analysis

    ui = _Ui(quiet, as_json)
    job = _output_job((input,), output, force) if output is not None else None
    codec = _load_codec(model, device, threads, ui)
    try:
        with _warnings_to_stderr(input, ui):
            result = analysis(codec, Path(input), quality, effort, not no_filter)
            if job is not None:
                _write(job, _png(result.picture()), force)
    except VaecodecError as exc:
        _fail(exc, input)
    except KeyboardInterrupt:
        _interrupted()
    t = result.totals()
    ui.record({"input": input, "output": output, **t})
    ui.summary(f"{input}: {t['width']}x{t['height']}, quality {t['quality']:g}: {t['latent_bits']:.0f} bits "
               f"in the latents (y {t['y_bits']:.0f}, z {t['z_bits']:.0f}), {t['latent_bpp']:.3f} bpp; file "
               f"{t['file_bits']} bits (payload {t['payload_bits']}, side information {t['side_bits']:.0f})"
               + (f" -> {output}" if output else ""))


def _images_in(folder: Path) -> list[Path]:
    from .image import IMAGE_EXTENSIONS

    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [Path(root) / f for f in sorted(files) if Path(f).suffix.lower() in IMAGE_EXTENSIONS]
    return found


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--top", "top", type=click.IntRange(min=0), default=20, show_default=True,
              help="How many of the most surprising images to list (0: all).")
@click.option("--by", type=click.Choice(["score", "floor", "local", "image"]), default="score",
              show_default=True, help="Rank by the score or by one of its features (docs/latent-tools.md).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the ranking as one JSON object on stdout (and nothing else there).")
@_common
def scan(folder: Path, top: int, by: str, as_json: bool, quiet: bool, threads: int | None, device: str,
         force: bool, model: str | None) -> None:
    """Rank the images of a folder (and its subfolders) by surprise: how much more they cost than
    natural photos at the reference quality (docs/latent-tools.md).

    Images are read one at a time; a file that cannot be read is reported and the rest go on (exit
    status 1 at the end). Scores are in standard deviations of natural photos: above 3 is rare among
    them. The score is the largest of floor (noise all over) and local (a dear 64x64 area); --by
    local ranks by the local feature alone, which finds a pasted patch more surely.
    """
    from .latent_tools import Calibration, surprise

    ui = _Ui(quiet, as_json)
    files = _images_in(folder)
    if not files:
        _error(f"{folder}: no image files in it")
        sys.exit(EXIT_FAILED)
    codec = _load_codec(model, device, threads, ui)
    try:
        calibration = Calibration.of(codec, model)
    except VaecodecError as exc:
        _fail(exc)
    scores, errors = [], []
    bar = None if quiet else click.progressbar(length=len(files), label="scanning", file=sys.stderr)
    try:
        for path in files:
            try:
                with _warnings_to_stderr(str(path), ui):
                    s = surprise(codec, path, calibration)
                scores.append({"path": str(path), **s.totals()})
            except VaecodecError as exc:
                msg = _one_line(exc)
                msg = msg if str(path) in msg else f"{path}: {msg}"
                errors.append({"path": str(path), "error": msg})
                if bar is not None:
                    click.echo("", err=True)
                _error(msg)
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:
        _interrupted()
    if bar is not None:
        bar.render_finish()
    scores.sort(key=lambda r: -r[by])
    shown = scores[:top] if top else scores
    if as_json:
        click.echo(json.dumps({"folder": str(folder), "quality": calibration.quality, "by": by,
                               "images": len(files), "ranked": shown, "errors": errors}))
    else:
        for rank, r in enumerate(shown, 1):
            ui.summary(f"{rank:4d}  {r[by]:7.2f}  {r['bpp']:6.3f} bpp  {r['path']}")
        ui.note(f"{len(scores)} of {len(files)} images scored at quality {calibration.quality:g}")
    if errors:
        sys.exit(EXIT_FAILED)


@click.command()
@click.argument("first", metavar="A")
@click.argument("second", metavar="B")
@click.option("-o", "--output", required=True, metavar="STRIP.png|FRAMES/",
              help="A strip image (the steps side by side), or a folder (a name ending in /, created) for "
                   "one PNG per step, 00.png, 01.png, ...")
@click.option("--steps", type=click.IntRange(min=2), default=8, show_default=True,
              help="Images from A to B, both included.")
@click.option("-q", "--quality", type=_QUALITY, default=DEFAULT_QUALITY, show_default=True,
              help="The quality whose latents are blended.")
@_common
def interpolate(first: str, second: str, output: str, steps: int, quality: float, quiet: bool,
                threads: int | None, device: str, force: bool, model: str | None) -> None:
    """Decode linear blends of two images' latents, from A to B (B is resized to A's size).

    The latent space is a learned transform of the pixels, not a semantic one: expect something
    close to a cross-fade, not a morph.
    """
    from .latent_tools import interpolate as blends
    from .latent_tools import strip

    ui = _Ui(quiet)
    folder = output.endswith(("/", os.sep)) or Path(output).is_dir()
    if folder:
        jobs = [_Job(Path(first), Path(output) / f"{i:02d}.png", True) for i in range(steps)]
        _check_outputs(jobs + [_Job(Path(second), None)])
    else:
        jobs = [_output_job((first, second), output, force)]
    try:
        for job in jobs:
            _check_output(job, force)
    except VaecodecError as exc:
        _fail(exc)
    codec = _load_codec(model, device, threads, ui)
    try:
        with _warnings_to_stderr(first, ui):
            frames = blends(codec, first, second, [i / (steps - 1) for i in range(steps)], quality)
        for job, img in zip(jobs, frames if folder else [strip(frames)], strict=True):
            _write(job, _png(img), force)
    except VaecodecError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _interrupted()
    ui.summary(f"{first} -> {second}: {steps} steps at quality {quality:g} -> {output}")


class _Size(click.ParamType):
    """WIDTHxHEIGHT in pixels."""

    name = "WxH"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        try:
            w, h = (int(v) for v in str(value).lower().split("x"))
        except ValueError:
            self.fail(f"{value!r} is not a size WIDTHxHEIGHT (example: 256x256)", param, ctx)
        if not (0 < w <= 65535 and 0 < h <= 65535):
            self.fail(f"{value!r}: each side must be 1 to 65535 pixels", param, ctx)
        return w, h


@click.command()
@click.option("-o", "--output", required=True, metavar="FILE.png", help="Where to write the sample (PNG).")
@click.option("--size", type=_Size(), default="256x256", show_default=True, help="Width x height, pixels.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="The seed: the same seed gives the same image.")
@click.option("-q", "--quality", type=_QUALITY, default=DEFAULT_QUALITY, show_default=True,
              help="The quality the sampled latents are decoded at.")
@_common
def sample(output: str, size: tuple[int, int], seed: int, quality: float, quiet: bool, threads: int | None,
           device: str, force: bool, model: str | None) -> None:
    """Draw an image from the model's prior: z from its factorized density, y from the conditional
    Gaussians, decoded. Deterministic for a seed. Expect textures, not photos."""
    from .latent_tools import sample as draw

    ui = _Ui(quiet)
    job = _Job(None, Path(output))
    try:
        _check_output(job, force)
    except VaecodecError as exc:
        _fail(exc)
    codec = _load_codec(model, device, threads, ui)
    try:
        _write(job, _png(draw(codec, size, seed, quality)), force)
    except VaecodecError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _interrupted()
    ui.summary(f"sample {size[0]}x{size[1]}, seed {seed}, quality {quality:g} -> {output}")


COMMANDS = (analyze, scan, interpolate, sample)


def register(group: click.Group) -> None:
    """Add the latent commands to the ``vaecodec`` group."""
    for command in COMMANDS:
        group.add_command(command)

