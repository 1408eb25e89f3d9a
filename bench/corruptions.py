"""The corrupted copies of Kodak that ``bench.anomaly`` scores against the clean photos, one kind at a
time, each made deterministically from the image's index (so every run scores the same images)."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

PATCH = 64  # side of the pasted patches, pixels

# A corruption: (the clean image, the other images, the image's index) -> (corrupted image, the
# pasted patch's box (left, top, right, bottom) or None)
Box = tuple[int, int, int, int]
Corruption = Callable[[Image.Image, list[Image.Image], int], tuple[Image.Image, Box | None]]


def _rng(index: int, salt: int) -> np.random.Generator:
    return np.random.default_rng([index, salt])


def gaussian_noise(sigma: float) -> Corruption:
    def corrupt(img: Image.Image, _others: list[Image.Image], index: int) -> tuple[Image.Image, None]:
        x = np.asarray(img, dtype=np.float64)
        x = x + _rng(index, int(sigma)).normal(0, sigma, x.shape)
        return Image.fromarray(np.clip(np.round(x), 0, 255).astype(np.uint8)), None
    return corrupt


def jpeg(quality: int) -> Corruption:
    def corrupt(img: Image.Image, _others: list[Image.Image], _index: int) -> tuple[Image.Image, None]:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), None
    return corrupt


def blur(radius: float) -> Corruption:
    def corrupt(img: Image.Image, _others: list[Image.Image], _index: int) -> tuple[Image.Image, None]:
        return img.filter(ImageFilter.GaussianBlur(radius)), None
    return corrupt


def _box(img: Image.Image, rng: np.random.Generator) -> Box:
    left = int(rng.integers(0, img.width - PATCH + 1))
    top = int(rng.integers(0, img.height - PATCH + 1))
    return left, top, left + PATCH, top + PATCH


def patch_of_other(img: Image.Image, others: list[Image.Image], index: int) -> tuple[Image.Image, Box]:
    """A 64 x 64 patch of the next image, from a random place, pasted at a random place."""
    rng = _rng(index, 1)
    other = others[(index + 1) % len(others)]
    src = _box(other, rng)
    box = _box(img, rng)
    out = img.copy()
    out.paste(other.crop(src), box[:2])
    return out, box


def patch_of_noise(img: Image.Image, _others: list[Image.Image], index: int) -> tuple[Image.Image, Box]:
    """A 64 x 64 patch of uniform noise (0..255, each channel) pasted at a random place."""
    rng = _rng(index, 2)
    box = _box(img, rng)
    out = img.copy()
    out.paste(Image.fromarray(rng.integers(0, 256, (PATCH, PATCH, 3), dtype=np.uint8)), box[:2])
    return out, box


WORDS = ("sale", "holiday", "2024", "copyright", "best price", "click here", "photo by", "sample",
         "watermark", "limited offer", "new", "www.example.com")


def _text_lines(draw: ImageDraw.ImageDraw, rng: np.random.Generator, area: Box, lines: int, size: int,
                fill: tuple[int, int, int]) -> None:
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = area
    for k in range(lines):
        words = " ".join(rng.choice(WORDS, size=3))
        y = top + k * (bottom - top) // lines
        draw.text((left + int(rng.integers(0, 40)), y), words, fill=fill, font=font)


def text_overlay(img: Image.Image, _others: list[Image.Image], index: int) -> tuple[Image.Image, None]:
    """Captions, a banner and a logo box rendered over the photo."""
    rng = _rng(index, 3)
    out = img.copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    draw.rectangle((0, h - h // 6, w, h), fill=(20, 20, 20))
    _text_lines(draw, rng, (10, h - h // 6 + 8, w, h), 2, 22, (255, 255, 255))
    _text_lines(draw, rng, (10, 10, w, h // 3), 3, 30, (255, 255, 0))
    x0, y0 = int(rng.integers(w // 2, w - 120)), int(rng.integers(h // 3, h // 2))
    draw.rectangle((x0, y0, x0 + 100, y0 + 60), outline=(255, 0, 0), width=4, fill=(255, 255, 255))
    draw.text((x0 + 10, y0 + 18), "LOGO", fill=(255, 0, 0), font=ImageFont.load_default(size=24))
    return out, None


def screenshot(img: Image.Image, _others: list[Image.Image], index: int) -> tuple[Image.Image, None]:
    """A synthetic screenshot of the photo's size: flat windows, title bars, buttons and text."""
    rng = _rng(index, 4)
    w, h = img.size
    out = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(180, 250, 3)))
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, 0, w, 28), fill=(40, 40, 48))
    _text_lines(draw, rng, (8, 6, w, 28), 1, 14, (230, 230, 230))
    for _ in range(int(rng.integers(2, 5))):
        x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(30, h // 2))
        x1, y1 = int(rng.integers(x0 + 150, w + 1)), int(rng.integers(y0 + 120, h + 1))
        draw.rectangle((x0, y0, x1, y1), fill=(255, 255, 255), outline=(120, 120, 120))
        draw.rectangle((x0, y0, x1, y0 + 22), fill=tuple(int(v) for v in rng.integers(60, 200, 3)))
        _text_lines(draw, rng, (x0 + 6, y0 + 30, x1, y1 - 10), max(1, (y1 - y0 - 40) // 22), 14, (30, 30, 30))
        draw.rectangle((x1 - 80, y1 - 30, x1 - 10, y1 - 8), fill=(70, 130, 220))
    return out, None


CORRUPTIONS: dict[str, Corruption] = {
    "noise σ=10": gaussian_noise(10),
    "noise σ=25": gaussian_noise(25),
    "JPEG q=10": jpeg(10),
    "blur r=2": blur(2),
    "patch of another image": patch_of_other,
    "patch of noise": patch_of_noise,
    "text over photo": text_overlay,
    "screenshot": screenshot,
}
