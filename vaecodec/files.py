"""Reading inputs and writing outputs: the one atomic writer every output goes through.

An output is written to a temporary file in its own folder and renamed into place, so an error or an
interrupt never leaves a partial file, and a reader never sees one. Nothing existing is replaced
unless the caller says so (``force``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .errors import OutputError, VaecodecError

FileInput = bytes | bytearray | memoryview | str | os.PathLike | BinaryIO

# temporary files being written now: what remove_partial_outputs() deletes
_in_progress: set[Path] = set()


def remove_partial_outputs() -> None:
    """Delete every temporary file :func:`write_atomic` is writing now. For a signal handler that
    ends the process by raising: the exception may land between the file's creation and the code
    that would clean it up, so the handler clears first."""
    for tmp in list(_in_progress):
        tmp.unlink(missing_ok=True)


def read_bytes(src: FileInput) -> bytes:
    """The bytes of a file, or the bytes given; VaecodecError in one line if it cannot be read."""
    if isinstance(src, bytes | bytearray | memoryview):
        return bytes(src)
    if hasattr(src, "read"):
        data = src.read()
        if not isinstance(data, bytes):
            raise VaecodecError(f"{getattr(src, 'name', 'stream')}: not opened in binary mode")
        return data
    try:
        return Path(src).read_bytes()
    except FileNotFoundError:
        raise VaecodecError(f"{src}: no such file") from None
    except IsADirectoryError:
        raise VaecodecError(f"{src}: is a directory") from None
    except OSError as exc:
        raise VaecodecError(f"{src}: cannot read ({exc.strerror})") from None


def check_writable(path: Path, force: bool) -> None:
    """Refuse an existing output unless ``force`` (checked early, before any work is done)."""
    if Path(path).exists() and not force:
        raise OutputError(f"{path}: already exists (use --force to overwrite, or -o for another name)")


def write_atomic(path: str | os.PathLike, writer: Callable[[BinaryIO], object], force: bool = False) -> None:
    """Run ``writer(file)`` on a temporary file next to ``path``, then rename it into place."""
    path = Path(path)
    check_writable(path, force)
    # the name is made here so that it is known before the file exists (remove_partial_outputs)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    _in_progress.add(tmp)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        _in_progress.discard(tmp)
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        # the file is created private (0600); give it the mode a plain open() would, as other
        # encoders' outputs have (0644 under the usual umask)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            writer(f)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
        raise
    finally:
        _in_progress.discard(tmp)
