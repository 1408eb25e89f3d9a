"""The latent space as a tool: where the bits go (rate maps), what is unusual (surprise scores),
what lies between two images (interpolation) and what the prior has learned (samples).

Everything here reads the latents that :meth:`vaecodec.Codec.encode_latents` returns, the same
integers :meth:`~vaecodec.Codec.compress` codes, and their exact cost:

* **Bits.** A y symbol costs ``-log2((q + 1) / 2**24)`` bits, ``q`` the entry of its value in the
  integer table of its scale index (:mod:`vaecodec.entropy`): the probability the ANS coder codes it
  with. A value outside the table's range costs the escape entry's bits plus the 8 bits a byte of
  its zigzag varint in the escape stream. z symbols cost the same under their channel's table. The
  sum is what the file's ANS and escape streams hold, up to the coder's final flush (a few bytes).
* **Rate map.** Each y position covers 16 x 16 pixels; its bits, summed over channels, plus its
  share of the z cell above it (a z cell covers 4 x 4 y positions and its bits are spread evenly over
  them) are the bits of that block. Blocks of the padding the codec adds to reach a multiple of 64
  pixels are folded into the image's last row and column of blocks, so the map's total is the
  latents' total.
* **Surprise.** :func:`surprise`: how much more an image costs than natural photos at a fixed
  reference quality, against statistics computed once from the training photos and shipped in the
  weights file (:data:`CALIBRATION_KEY`; how they are made: ``training/surprise.py``, what they
  measure: ``docs/latent-tools.md``).
* **Interpolation and samples.** :func:`interpolate` decodes linear blends of two images' decoded
  latents; :func:`sample` draws z from the factorized tables and y from the conditional Gaussian
  tables, in the decoder's two-pass order, with integer draws from a seeded CPU generator.

The latent space is a learned transform of the pixels, not a semantic one: a blend of two latents
decodes to something close to a cross-fade, and samples from the prior are textures, not photos.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from . import container, image
from .entropy import TableSet
from .errors import VaecodecError
from .image import ImageInput
from .latent_codec import LatentCodec, Latents, two_pass
from .prior import ctx_tiled, hs_tiled
from .quality import DEFAULT_QUALITY, check_quality, level_of
from .transforms import padded_size

if TYPE_CHECKING:
    from .codec import Codec

BLOCK = 16  # pixels per side of one y position
Z_CELL = 4  # y positions per side of one z position
CALIBRATION_KEY = "surprise"  # the weights file's metadata key of the surprise statistics
CALIBRATION_VERSION = 1
REFERENCE_QUALITY = 10.0  # the quality surprise is measured at (stored with the statistics)
FLOOR_QUANTILE = 2  # percent: the cheapest blocks of an image, for the "floor" feature
WINDOW = 4  # blocks per side of the window the local score looks at (64 x 64 pixels)
FLOOR_BPP = 1 / 64  # added to block rates before their logarithm: a flat block costs next to nothing


# ---- latents and their bits --------------------------------------------------------------------


@dataclass(frozen=True)
class ImageLatents:
    """One image's latents as the decoder derives them, and what each symbol costs.

    ``z``: z symbols (N, H/64, W/64); ``y``: y symbols ``round(y - mean)`` (M, H/16, W/16); ``mean``:
    the prior's fixed-point means of y (``mean / 256``) and ``index`` its scale indices, which the
    decoder derives from z and the decoded anchors; all int64 numpy arrays on the padded image's grid.
    ``z_bits``, ``y_bits``: the exact bits of each symbol (:meth:`TableSet.symbol_bits
    <vaecodec.entropy.TableSet.symbol_bits>`). ``quality`` and ``size`` (width, height) are those of
    the image."""

    z: np.ndarray
    y: np.ndarray
    mean: np.ndarray
    index: np.ndarray
    quality: float
    size: tuple[int, int]
    z_bits: np.ndarray
    y_bits: np.ndarray

    @classmethod
    def of(cls, latents: Latents, quality: float, size: tuple[int, int], codec: LatentCodec, i: int = 0
           ) -> ImageLatents:
        """Image i of a batch of latents, with its bits under the codec's tables."""
        a = latents.numpy(i)
        z_table = np.broadcast_to(np.arange(a["z"].shape[0])[:, None, None], a["z"].shape)
        return cls(a["z"], a["y"], a["mean"], a["index"], quality, size,
                   codec.z_coder.tables.symbol_bits(a["z"], z_table),
                   codec.y_coder.tables.symbol_bits(a["y"], a["index"]))

    @property
    def level(self) -> float:
        """The model's gain level of the quality (:func:`vaecodec.quality.level_of`)."""
        return level_of(self.quality)

    @property
    def bits(self) -> float:
        """All the latents' bits: what the file's ANS and escape streams hold, up to the coder's flush."""
        return float(self.y_bits.sum() + self.z_bits.sum())

    def batch(self, device: torch.device | str = "cpu") -> Latents:
        """As a batch of one (:class:`vaecodec.latent_codec.Latents`) on a device."""
        return Latents(*(torch.from_numpy(np.ascontiguousarray(a))[None].to(device)
                         for a in (self.z, self.y, self.mean, self.index)))


# ---- rate maps -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateMap:
    """Where an image's bits go: ``bits`` (rows, cols) per 16 x 16-pixel block of the image, y and
    the block's share of z, the padding's folded into the last row and column; ``pixels`` the
    image's pixels in each block; ``y_bits``, ``z_bits`` the totals and ``channel_bits`` (M,) y's
    bits per channel."""

    bits: np.ndarray
    pixels: np.ndarray
    y_bits: float
    z_bits: float
    channel_bits: np.ndarray

    @property
    def bpp(self) -> np.ndarray:
        """Bits per pixel of each block."""
        return self.bits / self.pixels

    @property
    def total(self) -> float:
        return float(self.bits.sum())


def _fold(grid: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """A (R, C) grid cut to (rows, cols), what lies beyond added into the last row and column."""
    out = grid[:rows].copy()
    out[-1] += grid[rows:].sum(0)
    out, rest = out[:, :cols].copy(), out[:, cols:]
    out[:, -1] += rest.sum(1)
    return out


def block_pixels(size: tuple[int, int]) -> np.ndarray:
    """The image's pixels in each of its 16 x 16 blocks (fewer at the right and bottom edges)."""
    w, h = size
    rows = np.minimum(BLOCK, h - BLOCK * np.arange(-(-h // BLOCK)))
    cols = np.minimum(BLOCK, w - BLOCK * np.arange(-(-w // BLOCK)))
    return np.outer(rows, cols).astype(np.float64)


def rate_map(latents: ImageLatents) -> RateMap:
    """The image's bits per 16 x 16 block (module docstring)."""
    z_spread = np.kron(latents.z_bits.sum(0), np.ones((Z_CELL, Z_CELL))) / Z_CELL**2
    cells = latents.y_bits.sum(0) + z_spread
    pixels = block_pixels(latents.size)
    return RateMap(_fold(cells, *pixels.shape), pixels, float(latents.y_bits.sum()),
                   float(latents.z_bits.sum()), latents.y_bits.sum(axis=(1, 2)))


@dataclass(frozen=True)
class Analysis:
    """An image, the .vaez file compress makes of it, and where that file's bits go."""

    rgb: np.ndarray  # (H, W, 3) uint8, the image as coded
    rates: RateMap  # of the file's own latents
    quality: float
    file_bits: int  # the whole file
    payload_bits: int  # its ANS and escape streams

    def totals(self) -> dict[str, Any]:
        """The totals in bits (``side_bits``: the file's bits beyond the latents' own: header, Wiener
        filter, alpha, metadata and the coder's flush), the latents' bits per pixel and y's share of
        its bits by channel."""
        r = self.rates
        h, w = self.rgb.shape[:2]
        return {"width": w, "height": h, "quality": self.quality, "y_bits": round(r.y_bits, 1),
                "z_bits": round(r.z_bits, 1), "latent_bits": round(r.total, 1),
                "latent_bpp": round(r.total / (w * h), 5), "payload_bits": self.payload_bits,
                "file_bits": self.file_bits, "side_bits": round(self.file_bits - r.total, 1),
                "channel_share": [round(float(v), 5) for v in r.channel_bits / max(r.y_bits, 1e-12)]}

    def picture(self) -> Image.Image:
        """The image beside its heat map, in bits per pixel (the scale ends at the 99th percentile
        of the blocks: a few very dear blocks would otherwise leave the rest dark)."""
        bpp = self.rates.bpp
        return heat_map(self.rgb, bpp, 0.0, float(np.percentile(bpp, 99)) or 1.0, "bits/pixel")


def analysis(codec: Codec, img: ImageInput, quality: float | None = None, effort: int = 0, wiener: bool = True
             ) -> Analysis:
    """Compress an image as :meth:`Codec.compress` would and map the bits of the file's latents."""
    pic = image.load(img, codec.max_pixels)
    data = codec.compress(pic, quality, effort, wiener=wiener)
    payload = container.unpack(data)[1]
    latents = codec.file_latents(data)
    return Analysis(pic.rgb, rate_map(latents), latents.quality, 8 * len(data),
                    8 * (len(payload.stream) + len(payload.escapes)))


# ---- pictures ------------------------------------------------------------------------------------

# a perceptual dark-to-light ramp (close to matplotlib's "magma"), interpolated linearly
_RAMP = np.array([[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]],
                 dtype=np.float64)
_BAR = 16  # width of the colour bar, pixels
_MARGIN = 8


def colours(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Values -> uint8 RGB (..., 3) on the ramp, ``low`` and below darkest, ``high`` and above lightest."""
    t = np.clip((values - low) / max(high - low, 1e-12), 0, 1) * (len(_RAMP) - 1)
    i = np.minimum(t.astype(int), len(_RAMP) - 2)
    f = (t - i)[..., None]
    return np.round(_RAMP[i] * (1 - f) + _RAMP[i + 1] * f).astype(np.uint8)


def heat_map(rgb: np.ndarray, blocks: np.ndarray, low: float, high: float, label: str) -> Image.Image:
    """The image (H, W, 3) uint8 and, right of it, ``blocks`` (one value per 16 x 16 block) as colours
    over a grey copy of it, with a colour bar from ``low`` to ``high`` labelled ``label``."""
    h, w = rgb.shape[:2]
    colour = colours(np.repeat(np.repeat(blocks, BLOCK, 0), BLOCK, 1)[:h, :w], low, high).astype(np.float64)
    grey = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    overlay = np.round(0.75 * colour + 0.25 * grey[..., None]).astype(np.uint8)
    font = ImageFont.load_default(size=12)
    ticks = [low + (high - low) * k / 4 for k in range(5)]
    text_w = max(int(font.getlength(f"{v:.2f}")) for v in ticks) + 4
    label_w = int(font.getlength(label))
    width = 2 * w + 3 * _MARGIN + _BAR + max(text_w, label_w - _BAR)
    height = max(h, 160) + 2 * _MARGIN
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    canvas.paste(Image.fromarray(rgb), (_MARGIN, _MARGIN))
    canvas.paste(Image.fromarray(overlay), (w + 2 * _MARGIN, _MARGIN))
    x0, top, bottom = 2 * w + 3 * _MARGIN, _MARGIN + 20, _MARGIN + max(h, 160) - 6
    ramp = colours(np.linspace(high, low, bottom - top)[:, None].repeat(_BAR, 1), low, high)
    canvas.paste(Image.fromarray(ramp), (x0, top))
    draw = ImageDraw.Draw(canvas)
    draw.text((x0, _MARGIN), label, fill=(0, 0, 0), font=font)
    for v in ticks:
        y = bottom - (v - low) / max(high - low, 1e-12) * (bottom - top)
        draw.line((x0 + _BAR, y, x0 + _BAR + 3, y), fill=(0, 0, 0))
        draw.text((x0 + _BAR + 5, y - 6), f"{v:.2f}", fill=(0, 0, 0), font=font)
    return canvas


def strip(images: Sequence[Image.Image], gap: int = 4) -> Image.Image:
    """Images side by side on white, ``gap`` pixels apart."""
    width = sum(im.width for im in images) + gap * (len(images) - 1)
    out = Image.new("RGB", (width, max(im.height for im in images)), (255, 255, 255))
    x = 0
    for im in images:
        out.paste(im.convert("RGB"), (x, 0))
        x += im.width + gap
    return out


# ---- between two images, and samples from the prior ----------------------------------------------


def interpolate(codec: Codec, a: ImageInput, b: ImageInput, ts: Iterable[float], quality: float | None = None
                ) -> list[Image.Image]:
    """The decoded blends ``(1 - t) a + t b`` of two images' decoded latents (y_hat), one per t, at one
    quality; b is resized to a's size first if they differ. t = 0 and 1 give the two images as the
    codec decodes them (without a Wiener filter); t outside [0, 1] extrapolates."""
    first, second = (image.load(src, codec.max_pixels) for src in (a, b))
    if second.size != first.size:
        second = image.load(Image.fromarray(second.rgb).resize(first.size, Image.Resampling.LANCZOS))
    ends = [codec.encode_latents(pic, quality) for pic in (first, second)]
    ya, yb = (lat.batch(codec.device).y_hat for lat in ends)
    q, size = ends[0].quality, ends[0].size
    return [Image.fromarray(codec._rgb_of([torch.lerp(ya, yb, float(t))], [q], [None], [size])[0])
            for t in ts]


def _draw(tables: TableSet, table: np.ndarray, gen: torch.Generator) -> np.ndarray:
    """One value per entry of ``table`` (int, any shape), drawn from that table's integer PMF without
    its escape entry (the tails beyond a table's range are left out): an integer uniform draw from
    ``gen`` per value, table by table in ascending order, raster order within a table, so a seed
    gives the same values on every machine."""
    flat = table.ravel()
    out = np.empty(flat.shape, dtype=np.int64)
    for t, q in enumerate(tables.split()):
        where = np.flatnonzero(flat == t)
        if not len(where):
            continue
        cdf = np.cumsum(q[:-1] + 1)
        u = torch.randint(0, int(cdf[-1]), (len(where),), generator=gen).numpy()
        out[where] = tables.offsets[t] + np.searchsorted(cdf, u, side="right")
    return out.reshape(table.shape)


def sample(codec: Codec, size: tuple[int, int], seed: int, quality: float | None = None) -> Image.Image:
    """An image of ``size`` (width, height) drawn from the model's prior: z from the factorized
    tables, then y in the decoder's two-pass order from the Gaussian tables of the scale indices the
    integer h_s and context give, decoded at ``quality``. The same seed gives the same latents on
    every machine (integer draws, integer networks), and the same image wherever the float synthesis
    rounds alike. What comes out are textures, not photos: the prior models the statistics of local
    patches of latents, not scenes."""
    w, h = size
    image.check_pixels(w, h, codec.max_pixels)
    quality = check_quality(DEFAULT_QUALITY if quality is None else quality)
    latent, device = codec.model.latent, codec.device
    gen = torch.Generator().manual_seed(seed)
    hp, wp = padded_size(w, h)
    z_shape = (latent.z_channels, hp // (BLOCK * Z_CELL), wp // (BLOCK * Z_CELL))
    z_table = np.broadcast_to(np.arange(z_shape[0])[:, None, None], z_shape)
    z = torch.from_numpy(_draw(latent.z_coder.tables, z_table, gen))[None].to(device)

    def code_part(mask: torch.Tensor, _mean: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        values = _draw(latent.y_coder.tables, index[0].cpu().numpy(), gen)
        return torch.where(mask, torch.from_numpy(values)[None].to(device), 0)

    def context(sym: torch.Tensor, mean: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return ctx_tiled(latent.context, sym, mean, index)

    y, mean, index = two_pass(context if latent.context is not None else None, *hs_tiled(latent.h_s, z),
                              code_part)
    y_hat = Latents(z, y, mean, index).y_hat
    return Image.fromarray(codec._rgb_of([y_hat], [quality], [None], [(w, h)])[0])


# ---- surprise ------------------------------------------------------------------------------------


def block_cost(rates: RateMap, floor: float = FLOOR_BPP) -> np.ndarray:
    """log2 of each block's bits per pixel (``floor`` added, so that flat blocks do not dominate)."""
    return np.log2(rates.bpp + floor)


def window_cost(cost: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """The mean block cost of every ``window`` x ``window``-block window inside the grid (sliding by
    one block); one window of the whole grid when the grid is smaller."""
    k = (min(window, cost.shape[0]), min(window, cost.shape[1]))
    c = np.pad(np.cumsum(np.cumsum(cost, 0), 1), ((1, 0), (1, 0)))
    return (c[k[0]:, k[1]:] - c[: -k[0] or None, k[1]:] - c[k[0]:, : -k[1] or None]
            + c[: -k[0] or None, : -k[1] or None]) / (k[0] * k[1])


# What surprise measures of an image, each a number that natural photos keep within a range:
FEATURES = {
    "image": "log2 of the latents' bits per pixel",
    "floor": f"log2 bits per pixel of its cheapest blocks (the {FLOOR_QUANTILE:g} % percentile): natural "
             "photos nearly always have some smooth area that costs next to nothing, noise leaves none",
    "local": "log2 bits per pixel of its dearest 64 x 64-pixel window",
}
SCORED = ("floor", "local")  # the one-sided score is the largest of these, in standard deviations


def statistics(rates: RateMap, floor: float = FLOOR_BPP, window: int = WINDOW
               ) -> dict[str, float | np.ndarray]:
    """The :data:`FEATURES` of an image's rate map, and ``blocks``, each block's log2 bits per pixel."""
    cost = block_cost(rates, floor)
    return {"image": float(np.log2(rates.total / rates.pixels.sum())),
            "floor": float(np.percentile(cost, FLOOR_QUANTILE)),
            "local": float(window_cost(cost, window).max()), "blocks": cost}


@dataclass(frozen=True)
class Calibration:
    """Mean and standard deviation of each of the :data:`FEATURES` over natural photos at
    ``quality``, and of the blocks' costs over all their blocks (``training/surprise.py`` computes
    them; the weights file carries them under :data:`CALIBRATION_KEY`)."""

    quality: float
    floor: float
    window: int
    features: dict[str, tuple[float, float]]
    block: tuple[float, float]
    photos: int
    source: str

    def to_json(self) -> str:
        return json.dumps({"version": CALIBRATION_VERSION, **self.__dict__}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        try:
            d = json.loads(text)
            if d.pop("version") != CALIBRATION_VERSION:
                raise ValueError("unknown version")
            d["features"] = {k: (float(m), float(s)) for k, (m, s) in d["features"].items()}
            d["block"] = tuple(float(v) for v in d["block"])
            cal = cls(**d)
            if set(cal.features) != set(FEATURES):
                raise ValueError(f"features {sorted(cal.features)}, not {sorted(FEATURES)}")
            if min(s for _, s in [*cal.features.values(), cal.block]) <= 0:
                raise ValueError("a standard deviation is not positive")
            check_quality(cal.quality)
            return cal
        except (ValueError, TypeError, KeyError, AttributeError, VaecodecError) as exc:
            raise VaecodecError(f"the weights file's surprise statistics are not usable ({exc})") from None

    @classmethod
    def of(cls, codec: Codec, model: str | None = None) -> Calibration:
        """The statistics shipped with the codec's model: in the weights file ``model`` (a path, or a
        shipped model's name; None: the shipped model of the codec's name), checked to be the file
        of the loaded model."""
        from . import weights

        path = weights.resolve(codec.model.name if model is None else model)
        meta = weights.read_metadata(path)
        if meta.get("model_id") != codec.model.model_id.hex():
            raise VaecodecError(f"{path} is not the weights file of the loaded model")
        if CALIBRATION_KEY not in meta:
            raise VaecodecError(f"model {codec.model.name} has no surprise statistics (add them with "
                                "python -m training.surprise)")
        return cls.from_json(meta[CALIBRATION_KEY])


@dataclass(frozen=True)
class Surprise:
    """How unusual an image is next to natural photos, in their standard deviations: ``features``
    (each of :data:`FEATURES`; ``image`` is negative for an image cheaper than photos, as a blurred
    or flat one is) and ``score``, the largest of the :data:`SCORED` ones, which ``scan`` ranks by.
    ``blocks``: each block's cost in standard deviations of natural photos' blocks (the surprise
    map). ``bpp``: the latents' bits per pixel at ``quality``."""

    score: float
    features: dict[str, float]
    bpp: float
    blocks: np.ndarray
    quality: float

    def top_block(self) -> tuple[int, int]:
        """(row, column) of the block with the highest surprise."""
        r, c = np.unravel_index(int(np.argmax(self.blocks)), self.blocks.shape)
        return int(r), int(c)

    def totals(self) -> dict[str, Any]:
        """The numbers, for JSON (``top_block``: its top-left pixel, x and y)."""
        r, c = self.top_block()
        return {"score": round(self.score, 3), **{k: round(v, 3) for k, v in self.features.items()},
                "bpp": round(self.bpp, 4), "quality": self.quality, "top_block": [BLOCK * c, BLOCK * r]}


def surprise(codec: Codec, img: ImageInput, calibration: Calibration | None = None) -> Surprise:
    """The surprise of an image at the calibration's quality (effort 0), against the statistics
    shipped with the model unless ``calibration`` is given."""
    cal = calibration or Calibration.of(codec)
    stats = statistics(rate_map(codec.encode_latents(img, cal.quality)), cal.floor, cal.window)
    z = {k: (stats[k] - mean) / std for k, (mean, std) in cal.features.items()}
    blocks = (stats["blocks"] - cal.block[0]) / cal.block[1]
    return Surprise(max(z[k] for k in SCORED), z, 2.0 ** stats["image"], blocks, cal.quality)
