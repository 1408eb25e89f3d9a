"""The codecs a user would otherwise pick, each behind one encode/decode interface.

Names, settings and encoder options follow ``../shared/reference/kodak_conventional_measured.csv``
(and its README), so our peer curves can be checked point by point against those measurements:

- ``jpeg420`` / ``jpeg444``: Pillow (libjpeg-turbo), ``quality`` 3..90, ``subsampling`` 2 / 0.
- ``webp``: Pillow (libwebp), ``quality`` 0..95, ``method=6``.
- ``avif``: the setting is the AV1 quantizer (0..63) of ``avifenc --min Q --max Q``, 4:4:4, speed 6.
  Pillow's ``quality`` maps to that quantizer through libavif's ``((100 - quality) * 63 + 50) // 100``,
  so :func:`avif_quality` inverts it. ``tune=psnr`` is explicit because libavif 1.x defaults libaom to
  tune=ssim, which costs ~0.3-3 dB PSNR per byte and no longer matches the reference (avifenc 0.11).
  ``avifenc``/``avifdec`` are used when Pillow lacks AVIF.
- ``jpeg2000``: the setting is the compression ratio of ``opj_compress -r`` (24 = 1 bpp for RGB),
  reproduced byte for byte by Pillow's OpenJPEG encoder with ``quality_mode="rates"``, the 9/7
  irreversible wavelet (``opj_compress -I``) and the RGB->YCC transform (``mct=1``).
- ``jxl``: ``cjxl -d DISTANCE -e 7`` / ``djxl`` (Debian's libjxl-tools); ``jxl_pil``: the
  pillow-jxl-plugin at ``quality`` 1..95, effort 7.

Bytes are the whole file each tool writes (container included). A peer whose library or tool is
missing reports why in :attr:`Peer.missing` and is skipped by the benchmarks, never an error.
"""

from __future__ import annotations

import importlib.util
import io
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from PIL import Image, features

Encoder = Callable[[Image.Image, float, int], bytes]  # (RGB image, setting, threads) -> file bytes
Decoder = Callable[[bytes], Image.Image]


@dataclass(frozen=True)
class Peer:
    """One codec at a sweep of settings spanning about 0.1-2 bpp on Kodak."""

    name: str  # as in the reference CSV's codec column
    label: str  # what tables and plots call it
    settings: tuple[float, ...]
    speed_setting: float  # a setting near 1 bpp on Kodak, for the speed benchmark
    encode: Encoder
    decode: Decoder
    missing: str | None = None  # why it cannot run here, or None


def avif_quality(quantizer: float) -> int:
    """Pillow/libavif ``quality`` giving AV1 quantizer ``quantizer`` (libavif's mapping inverted)."""
    q = int(quantizer)
    return next(x for x in range(100, -1, -1) if ((100 - x) * 63 + 50) // 100 == q)


def _pil_encode(fmt: str, options: Callable[[float, int], dict], img: Image.Image, setting: float,
                threads: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options(setting, threads))
    return buf.getvalue()


def _pil_decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def _tool_encode(argv: Callable[[float, int], list[str]], suffix: str, img: Image.Image, setting: float,
                 threads: int) -> bytes:
    """Run a command-line encoder on a PNG of ``img``; the PNG write is part of the measured time,
    as it is for anyone calling the tool."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.png", Path(tmp) / f"out{suffix}"
        img.save(src, compress_level=1)
        subprocess.run([*argv(setting, threads), str(src), str(dst)], check=True, capture_output=True)
        return dst.read_bytes()


def _tool_decode(tool: str, suffix: str, data: bytes) -> Image.Image:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / f"in{suffix}", Path(tmp) / "out.png"
        src.write_bytes(data)
        subprocess.run([tool, str(src), str(dst)], check=True, capture_output=True)
        return _pil_decode(dst.read_bytes())


def _missing_tools(*tools: str) -> str | None:
    absent = [t for t in tools if shutil.which(t) is None]
    return f"{', '.join(absent)} not on PATH" if absent else None


def _pil_peer(name: str, label: str, fmt: str, settings: tuple[float, ...], speed_setting: float,
              options: Callable[[float, int], dict], feature: str) -> Peer:
    missing = None if features.check(feature) else f"Pillow built without {feature}"
    encode = partial(_pil_encode, fmt, options)
    return Peer(name, label, settings, speed_setting, encode, _pil_decode, missing)


def _tool_peer(name: str, label: str, settings: tuple[float, ...], speed_setting: float,
               argv: Callable[[float, int], list[str]], decoder: str, suffix: str) -> Peer:
    return Peer(name, label, settings, speed_setting, partial(_tool_encode, argv, suffix),
                partial(_tool_decode, decoder, suffix), _missing_tools(argv(1, 1)[0], decoder))


JPEG_QUALITIES = (3, 5, 8, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90)
WEBP_QUALITIES = (0, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
AVIF_QUANTIZERS = (10, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60)
J2K_RATIOS = (12, 16, 19.2, 24, 32, 36, 48, 60, 80, 96, 120, 160, 240)
JXL_DISTANCES = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.5, 8.0, 10.0, 13.0, 16.0, 20.0, 25.0)
JXL_PIL_QUALITIES = (1, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 85, 90, 92, 95)


def _avif_peer() -> Peer:
    if features.check("avif"):
        return _pil_peer("avif", "AVIF 4:4:4 (libavif/aom, speed 6)", "AVIF", AVIF_QUANTIZERS, 28,
                         lambda q, t: {"quality": avif_quality(q), "speed": 6, "subsampling": "4:4:4",
                                       "max_threads": t, "advanced": {"tune": "psnr"}}, "avif")
    return _tool_peer("avif", "AVIF 4:4:4 (avifenc, speed 6)", AVIF_QUANTIZERS, 28,
                      lambda q, t: ["avifenc", "-s", "6", "-y", "444", "-j", str(t), "-a", "tune=psnr",
                                    "--min", f"{q:g}", "--max", f"{q:g}"], "avifdec", ".avif")


def _jxl_pil_peer() -> Peer:
    if importlib.util.find_spec("pillow_jxl") is None:
        return Peer("jxl_pil", "JPEG XL (pillow-jxl-plugin)", JXL_PIL_QUALITIES, 75, _pil_encode, _pil_decode,
                    "pillow_jxl not installed")
    import pillow_jxl  # noqa: F401  (registers the JXL format with Pillow)

    return Peer("jxl_pil", "JPEG XL (pillow-jxl-plugin, effort 7)", JXL_PIL_QUALITIES, 75,
                partial(_pil_encode, "JXL", lambda q, t: {"quality": int(q), "effort": 7}), _pil_decode)


def all_peers() -> list[Peer]:
    """Every peer, available or not, in the order tables list them (JPEG 4:2:0, the anchor, first)."""
    return [
        _pil_peer("jpeg420", "JPEG 4:2:0 (Pillow, libjpeg-turbo)", "JPEG", JPEG_QUALITIES, 50,
                  lambda q, t: {"quality": int(q), "subsampling": 2}, "jpg"),
        _pil_peer("jpeg444", "JPEG 4:4:4 (Pillow, libjpeg-turbo)", "JPEG", JPEG_QUALITIES, 50,
                  lambda q, t: {"quality": int(q), "subsampling": 0}, "jpg"),
        _pil_peer("webp", "WebP (Pillow, libwebp, method 6)", "WEBP", WEBP_QUALITIES, 70,
                  lambda q, t: {"quality": int(q), "method": 6}, "webp"),
        _avif_peer(),
        _pil_peer("jpeg2000", "JPEG 2000 (Pillow, OpenJPEG)", "JPEG2000", J2K_RATIOS, 24,
                  lambda r, t: {"quality_mode": "rates", "quality_layers": [r], "mct": 1,
                                            "irreversible": True}, "jpg_2000"),
        _tool_peer("jxl", "JPEG XL (cjxl -e 7)", JXL_DISTANCES, 2.0,
                   lambda d, t: ["cjxl", "-d", f"{d:g}", "-e", "7", f"--num_threads={t}"], "djxl", ".jxl"),
        _jxl_pil_peer(),
    ]
