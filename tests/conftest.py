"""Shared fixtures: one CPU codec per session and synthetic test images generated in code.

Nothing here depends on the particular shipped weights (model id, file sizes, bpp or PSNR values):
the weights file is replaced whenever training produces a better model.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch

from bench.metrics import psnr  # noqa: F401  (the tests' PSNR is the benchmarks' PSNR)
from vaecodec import Codec

# Sanity floor for the PSNR of a smooth synthetic image at quality 10. The shipped weights reach
# 20-24 dB on the tiny (<= 64 px) test images, where edge padding dominates, and 35 dB at 513x257;
# a flat grey guess scores ~14 dB, so a broken transform or a desynchronised decoder fails it.
PSNR_FLOOR = 18.0

torch.set_num_threads(min(2, torch.get_num_threads()))


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """HxWx3 uint8: colour gradients, a disc and a rectangle, plus mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = xx / max(width - 1, 1), yy / max(height - 1, 1)
    img = np.stack([40 + 170 * u, 60 + 140 * v, 200 - 60 * (u + v)], axis=-1)
    img[(xx - width * 0.3) ** 2 + (yy - height * 0.4) ** 2 < (min(height, width) * 0.2) ** 2] = [220, 200, 60]
    img[int(height * 0.6) : int(height * 0.85), int(width * 0.55) : int(width * 0.9)] = [50, 90, 180]
    img += rng.normal(0, 2, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def codec() -> Codec:
    return Codec(device="cpu")


@pytest.fixture(scope="session")
def make_image():
    """Factory: make_image(height, width, seed=0) -> smooth HxWx3 uint8 array."""
    return smooth_image


@pytest.fixture(scope="session")
def small_vaez(codec) -> bytes:
    """A complete .vaez file of a 16x16 RGB image."""
    return codec.compress(smooth_image(16, 16, seed=3), quality=4)


@pytest.fixture(scope="session")
def small_rgba_vaez(codec) -> bytes:
    """A complete .vaez file of a 16x16 RGBA image (so it has an alpha stream)."""
    rgb = smooth_image(16, 16, seed=4)
    alpha = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    return codec.compress(np.dstack([rgb, alpha]), quality=4)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height grey pixels and holds almost no data: a decompression bomb."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small images: one torch thread is as fast, and steadier on a busy 2-core machine. Modules that
    want it say ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def run():
    """The CLI in this process: run(*args, input=None) -> click's Result, checked to have ended by
    sys.exit (never an uncaught exception) and to print no traceback."""
    from click.testing import CliRunner

    from vaecodec.cli import main

    runner = CliRunner()

    def invoke(*args, input=None):
        result = runner.invoke(main, [str(a) for a in args], input=input)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert "Traceback" not in result.output
        return result

    return invoke
