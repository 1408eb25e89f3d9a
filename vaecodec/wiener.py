"""The per-image Wiener filter: a linear filter the encoder fits to each image and sends in the file.

The learned post-filter (:class:`vaecodec.transforms.PostFilter`) is the same for every image. What
it cannot do is adapt: the encoder holds the original, so it can solve for the linear filter that
takes *this* decoded image closest to *this* original in the least-squares sense, and send its
coefficients (a hundred bytes or so). This is VVC's adaptive loop filter idea, done once per image, outside
any loop, on the decoder's final RGB. What it saves, net of its own bits, is measured in
``bench/results/wiener.md``.

Shape: for output channel c, ``out_c = x_c + sum_i w_i f_i + bias``, where the features f are

- the centre of each channel, ``x_c' - 128`` (a 3x3 colour matrix, in effect);
- for the channel's own plane, point-symmetric second differences ``x(p+d) + x(p-d) - 2 x(p)`` over
  the offsets d of a disc of diameter ``own_k``; for the other two planes, the same over a disc of
  diameter ``cross_k``.

Point symmetry halves the coefficients for almost nothing (``bench/results/wiener.md``); differences
instead of raw taps keep the coefficients small and their quantization harmless. On decode the
coefficients fold into one 3->3 convolution, so applying the filter costs one ``conv2d``.

Coefficients are integers: taps in steps of ``2**-step``, the colour matrix ``2**-(step+3)`` (its
features are ten times larger), the bias 1/16 of a grey level; written as signed Exp-Golomb codes
with one parameter. The pixels it produces are floating point and need not match bit for bit across
devices (nothing is entropy-decoded from them); the integers in the file are what is exact.

Section layout (docs/format.md): ``own_k, cross_k, step, golomb_k`` (one byte each), then
``3 * n_features(own_k, cross_k)`` zigzag Exp-Golomb codes, channel by channel, in feature order,
zero bits to the byte boundary. An empty section means no filter.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from .bits import BitReader, BitWriter, unzigzag
from .errors import CorruptFileError

OWN_SIZES = (3, 5, 7)
CROSS_SIZES = (1, 3)
MAX_STEP = 16
MAX_GOLOMB_K = 16
BIAS_STEP = 1 / 16
_MAX_PREFIX = 30  # an Exp-Golomb prefix longer than this is corruption, not a coefficient
_MAX_COEF = 1 << 20  # the encoder never sends a larger one (it would be a fit to noise)
# Shapes and steps the encoder tries; every image gets the one with the lowest lambda * MSE + bits.
ENCODER_SHAPES = ((5, 3), (7, 3))
ENCODER_STEPS = range(5, 13)
_FIT_PIXELS = 1 << 21  # rows beyond this many pixels are subsampled when fitting (not when applying)
_CHUNK_PIXELS = 1 << 16  # features are built this many pixels at a time, to bound the memory
_BAND_PIXELS = 1 << 20  # the filter is applied this many pixels (whole rows) at a time


def offsets(k: int) -> list[tuple[int, int]]:
    """Half of the nonzero offsets of a disc of diameter k (one of each +-d pair)."""
    r = k // 2
    reach = r * r + (1 if k > 3 else 2)  # 3: the full 3x3; larger: the disc without its corners
    return [(i, j) for i in range(-r, r + 1) for j in range(-r, r + 1)
            if (i, j) > (0, 0) and i * i + j * j <= reach]


def _layout(own_k: int, cross_k: int, c: int) -> list[tuple[int, list[tuple[int, int]]]]:
    """(plane, its offsets) for output channel c, in coding order: planes 0, 1, 2."""
    return [(p, offsets(own_k if p == c else cross_k) if (own_k if p == c else cross_k) > 1 else [])
            for p in range(3)]


def n_features(own_k: int, cross_k: int) -> int:
    """Coefficients per output channel: centre and offsets per plane, and the bias."""
    return sum(1 + len(o) for _, o in _layout(own_k, cross_k, 0)) + 1


@dataclass(frozen=True)
class WienerFilter:
    """One image's filter: its shape, quantization step and integer coefficients (3, n_features)."""

    own_k: int
    cross_k: int
    step: int
    coefficients: np.ndarray  # int64

    def kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The filter's change to the pixels folded into a 3->3 convolution of size own_k and a bias,
        in grey levels (float64). The identity is left out (``apply`` adds x) so that the kernel's
        entries are all small: a GPU convolving in TF32 keeps 10 mantissa bits, which would cost a
        kernel holding 1 + w a quarter of a grey level at 255, and costs this one nothing visible."""
        k, r = self.own_k, self.own_k // 2
        weight = torch.zeros(3, 3, k, k, dtype=torch.float64)
        bias = torch.zeros(3, dtype=torch.float64)
        tap, centre = 2.0 ** -self.step, 2.0 ** -(self.step + 3)
        for c in range(3):
            row = iter(self.coefficients[c].tolist())
            for p, offs in _layout(self.own_k, self.cross_k, c):
                w = next(row) * centre
                weight[c, p, r, r] += w
                bias[c] -= 128 * w
                for i, j in offs:
                    w = next(row) * tap
                    weight[c, p, r + i, r + j] += w
                    weight[c, p, r - i, r - j] += w
                    weight[c, p, r, r] -= 2 * w
            bias[c] += next(row) * BIAS_STEP
        return weight, bias

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Filter decoded pixels (B, 3, H, W) in grey levels (0..255, float), edges replicated; band
        by band (:meth:`bands`), so that the only image-sized tensor made is the result."""
        out = torch.empty_like(x)
        for r0, r1, band in self.bands(x):
            out[..., r0:r1, :] = band
        return out

    def bands(self, x: torch.Tensor, rows: int | None = None) -> Iterator[tuple[int, int, torch.Tensor]]:
        """The filtered image (B, 3, H, W) in bands of whole rows, top to bottom: (r0, r1, rows r0 .. r1
        of the result). ``rows`` per band, by default about ``_BAND_PIXELS`` pixels' worth.

        A band is convolved with the kernel's radius of real rows above and below it, replicated
        only at the image's own top and bottom, so it sees exactly the pixels it sees in the whole
        image: the results differ from a whole-image convolution by float rounding at most."""
        weight, bias = self.kernel()
        weight, bias = weight.to(x), bias.to(x)
        r = self.own_k // 2
        height = x.shape[2]
        rows = rows or max(1, _BAND_PIXELS // max(x.shape[3], 1))
        for r0 in range(0, height, rows):
            r1 = min(r0 + rows, height)
            a0, a1 = max(r0 - r, 0), min(r1 + r, height)
            padded = F.pad(x[..., a0:a1, :], (r, r, r - (r0 - a0), r - (a1 - r1)), mode="replicate")
            yield r0, r1, x[..., r0:r1, :] + F.conv2d(padded, weight, bias)


# ---- the section's bytes ----------------------------------------------------------------------

def _golomb_bits(u: np.ndarray, k: int) -> int:
    return int(np.sum(2 * np.floor(np.log2((u >> k) + 1)).astype(np.int64) + 1 + k))


def _zigzag(v: np.ndarray) -> np.ndarray:
    return np.where(v >= 0, 2 * v, -2 * v - 1).astype(np.int64)


def size_in_bits(coefficients: np.ndarray) -> int:
    """Bits of a section holding these coefficients with its best Golomb parameter (header included)."""
    u = _zigzag(coefficients.ravel())
    return 32 + 8 * -(-min(_golomb_bits(u, k) for k in range(MAX_GOLOMB_K + 1)) // 8)


def encode(filt: WienerFilter) -> bytes:
    """The filter section (module docstring), with the Golomb parameter that makes it shortest."""
    u = _zigzag(filt.coefficients.ravel())
    gk = min(range(MAX_GOLOMB_K + 1), key=lambda k: _golomb_bits(u, k))
    out = BitWriter()
    for v in u.tolist():
        out.exp_golomb(v, gk)
    return bytes([filt.own_k, filt.cross_k, filt.step, gk]) + out.getvalue()


def decode(data: bytes) -> WienerFilter | None:
    """Parse a filter section; None for an empty one. Raises CorruptFileError on anything malformed:
    an unknown shape, a code that runs past the section, or bytes left over after it."""
    if not data:
        return None
    if len(data) < 4:
        raise CorruptFileError("filter section is truncated")
    own_k, cross_k, step, gk = data[:4]
    if own_k not in OWN_SIZES or cross_k not in CROSS_SIZES or step > MAX_STEP or gk > MAX_GOLOMB_K:
        raise CorruptFileError(f"filter section has an unknown shape ({own_k}, {cross_k}, {step}, {gk})")
    n = 3 * n_features(own_k, cross_k)
    if len(data) > 4 + (n * (2 * _MAX_PREFIX + 1 + gk) + 7) // 8:  # checked before reading any bit
        raise CorruptFileError("filter section is longer than its coefficients can be")
    reader = BitReader(data[4:], "filter section")
    values = [unzigzag(reader.exp_golomb(gk, _MAX_PREFIX)) for _ in range(n)]
    reader.finish_bits()
    coefficients = np.array(values, dtype=np.int64).reshape(3, -1)
    return WienerFilter(own_k, cross_k, step, coefficients)


# ---- fitting (encoder) ------------------------------------------------------------------------

def _features(xp: np.ndarray, r: int, k: int, rows: np.ndarray) -> np.ndarray:
    """Every plane's centre and offsets over a disc of diameter k, and the bias: (3 * (1 +
    len(offsets(k))) + 1, n_pixels) float64 at the given rows (one feature per row, which is what
    makes building them fast), from the image padded by r on every side (edges replicated, as
    :meth:`WienerFilter.apply` does) or from :func:`_neighbourhoods`. Every smaller shape's features,
    for any output channel, are rows of these (:func:`_columns`), so one product serves them all."""
    W = xp.shape[2] - 2 * r

    def shifted(p: int, i: int, j: int) -> np.ndarray:
        return xp[p, rows + r + i, r + j : r + j + W]

    offs = offsets(k)
    out = np.empty((3 * (1 + len(offs)) + 1, len(rows), W))
    for p in range(3):
        base = p * (1 + len(offs))
        centre = xp[p, rows + r, r : r + W]
        np.subtract(centre, 128, out=out[base])
        for n, (i, j) in enumerate(offs, start=base + 1):
            np.add(shifted(p, i, j), shifted(p, -i, -j), out=out[n])
            out[n] -= 2 * centre
    out[-1] = 1
    return out.reshape(len(out), -1)


def _neighbourhoods(x: np.ndarray, rows: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """The pixels of x (3, H, W) that :func:`_features` reads for ``rows`` (ascending), float64 with
    the edges replicated (rows clipped to the image, columns padded by r), and where ``rows`` sit in
    them (the ``rows`` to give :func:`_features`): one slab for consecutive rows, each row's own
    2r + 1 rows for rows spread out (a large image's sample)."""
    if rows[-1] - rows[0] + 1 == len(rows):
        idx, local = np.arange(rows[0] - r, rows[-1] + r + 1), rows - rows[0]
    else:
        idx, local = (rows[:, None] + np.arange(-r, r + 1)).ravel(), np.arange(len(rows)) * (2 * r + 1)
    cols = np.clip(np.arange(-r, x.shape[2] + r), 0, x.shape[2] - 1)
    return x[np.ix_(range(3), np.clip(idx, 0, x.shape[1] - 1), cols)].astype(np.float64), local


def fit(decoded: np.ndarray, original: np.ndarray, lam: float) -> WienerFilter | None:
    """The filter that minimizes ``lam * MSE + bits per pixel`` for one image, or None when no filter
    beats sending none. ``decoded``: (3, H, W) float grey levels (the decoder's pixels before
    rounding); ``original``: (3, H, W) uint8; ``lam``: the quality's rate-distortion weight in the
    units of the training loss (lambda * 255^2 * MSE on 0..1 pixels is lambda * MSE in grey levels).

    The fit is least squares on the normal equations; the cost of every candidate (shape, step) is
    evaluated from them exactly, so only one pass over the pixels is needed. Images above 2 MP are
    fitted on evenly spaced rows (the statistics of a few million pixels are plenty). The pixels are
    read a chunk of rows at a time (:func:`_neighbourhoods`), so no image-sized copy is made."""
    H, W = decoded.shape[1:]
    n_px = H * W
    rows = np.arange(H)
    if n_px > _FIT_PIXELS:
        rows = np.linspace(0, H - 1, max(1, _FIT_PIXELS // W)).astype(int)
    k = max(own for own, _ in ENCODER_SHAPES)
    r = k // 2
    n = 3 * (1 + len(offsets(k))) + 1
    G, b, tt = np.zeros((n, n)), np.zeros((3, n)), np.zeros(3)  # normal equations, summed over chunks
    for chunk in np.array_split(rows, -(-len(rows) * W // _CHUNK_PIXELS)):
        near, local = _neighbourhoods(decoded, chunk, r)
        A = _features(near, r, k, local)
        t = (original[:, chunk].astype(np.float64) - decoded[:, chunk].astype(np.float64)).reshape(3, -1)
        G += A @ A.T
        # the same sums as t @ A.T, which multithreaded OpenBLAS can run orders of magnitude more
        # slowly (the 3-row operand first) when another process keeps a core busy
        b += (A @ t.T).T
        tt += np.einsum("ij,ij->i", t, t)
    n_fit = len(rows) * W
    base = tt.sum() / (3 * n_fit)
    best, best_cost = None, lam * base
    for own_k, cross_k in ENCODER_SHAPES:
        for step in ENCODER_STEPS:
            coef, sse = [], 0.0
            for c in range(3):
                idx = _columns(own_k, cross_k, k, c)
                g, v = G[np.ix_(idx, idx)], b[c, idx]
                w = np.linalg.solve(g + 1e-9 * np.trace(g) * np.eye(len(idx)), v)
                scale = _scales(own_k, cross_k, c, step)
                m = np.clip(np.round(w / scale), -_MAX_COEF, _MAX_COEF).astype(np.int64)
                wq = m * scale
                sse += tt[c] - 2 * wq @ v + wq @ g @ wq
                coef.append(m)
            coefficients = np.stack(coef)
            cost = lam * sse / (3 * n_fit) + size_in_bits(coefficients) / n_px
            if cost < best_cost:
                best, best_cost = WienerFilter(own_k, cross_k, step, coefficients), cost
    return best


def _scales(own_k: int, cross_k: int, c: int, step: int) -> np.ndarray:
    """The quantization step of each of channel c's coefficients."""
    out = []
    for _, offs in _layout(own_k, cross_k, c):
        out += [2.0 ** -(step + 3)] + [2.0 ** -step] * len(offs)
    return np.array(out + [BIAS_STEP])


def _columns(own_k: int, cross_k: int, k: int, c: int) -> list[int]:
    """Where output channel c's features of a shape sit among :func:`_features`' rows for k."""
    union = offsets(k)
    per_plane = 1 + len(union)
    idx = []
    for p, offs in _layout(own_k, cross_k, c):
        idx += [p * per_plane] + [p * per_plane + 1 + union.index(o) for o in offs]
    return idx + [3 * per_plane]  # the bias is last in both
