"""Helpers every bench script shares: where the data lives, which images to read, and the header
that makes a results file reproducible (date, commit, machine, the exact command that wrote it)."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image

from vaecodec.image import IMAGE_EXTENSIONS

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path(os.environ.get("VAECODEC_DATA", ROOT.parent / "shared" / "data"))


def image_files(folder: Path, limit: int | None = None) -> list[Path]:
    """The images of a folder in name order (the first ``limit``), so every run sees the same set."""
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)[:limit]
    if not files:
        raise SystemExit(f"no images in {folder}")
    return files


def load_rgb(path: Path) -> Image.Image:
    """An image fully decoded to 8-bit RGB: what every codec in a benchmark is given."""
    with Image.open(path) as im:
        return im.convert("RGB")


def command_line() -> str:
    """How this process was started, as a user would retype it (``python -m bench.rd --limit 3``)."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    entry = f"-m {spec.name}" if spec is not None and spec.name else shlex.quote(sys.argv[0])
    return f"python {entry} {shlex.join(sys.argv[1:])}".rstrip()


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:  # no git on this machine
        return ""


def cpu_name() -> str:
    """The CPU model, because bench machines of the same kind still differ in speed."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str = "cpu", threads: int | str | None = None) -> list[str]:
    """Markdown bullet lines naming date, commit, machine and command, for the top of a results file.

    The commit is flagged when vaecodec/ or weights/ have uncommitted changes, since the numbers then
    belong to no commit. ``threads`` may be a description such as "1 and 2"."""
    # A copy of the tree sent to a lent GPU machine may carry no .git, or a stale one (it reported an
    # old commit there): the sender names the commit in $VAECODEC_COMMIT, which wins.
    commit = os.environ.get("VAECODEC_COMMIT") or _git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = _git("status", "--porcelain", "--", "vaecodec", "weights", "bench")
    threads = torch.get_num_threads() if threads is None else threads
    gpu = f", GPU {torch.cuda.get_device_name()}" if device.startswith("cuda") else ""
    return [
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- commit: {commit}{' (with uncommitted changes)' if dirty else ''}",
        f"- machine: {platform.machine()} {cpu_name()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, torch {torch.__version__}, {threads} torch threads, "
        f"device {device}{gpu}",
        f"- command: `{command_line()}`",
    ]
