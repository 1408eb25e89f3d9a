"""Every code example in the README runs as written: the Python blocks and the command-line block."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def _cli_lines() -> list[str]:
    """The indented command lines of the "Command line" section, comments cut."""
    section = README.split("## Command line", 1)[1].split("\n## ", 1)[0]
    lines = [line[4:].split("  #", 1)[0].rstrip() for line in section.splitlines() if line.startswith("    ")]
    return [line for line in lines if line]


@pytest.fixture
def folder(tmp_path, make_image, monkeypatch) -> Path:
    for name, seed in (("photo.png", 1), ("a.png", 2), ("b.png", 3)):
        Image.fromarray(make_image(48, 64, seed=seed)).save(tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_has_examples():
    assert len(_python_blocks()) >= 2 and len(_cli_lines()) >= 8


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_python_example_runs(folder, index):
    exec(compile(_python_blocks()[index], f"README.md python block {index}", "exec"), {})


def test_command_line_examples_run_in_order(folder):
    shim = folder / "bin" / "vaecodec"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m vaecodec "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}"}
    for line in _cli_lines():
        done = subprocess.run(["bash", "-o", "pipefail", "-c", line], cwd=folder, env=env,
                              capture_output=True, timeout=300)
        assert done.returncode == 0, (line, done.stderr.decode())
    assert (folder / "photo.decoded.png").is_file() and (folder / "piped.png").is_file()
    assert Image.open(folder / "piped.png").size == (64, 48)
