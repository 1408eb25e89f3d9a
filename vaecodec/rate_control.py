"""Rate control: the quality that meets a file-size or a PSNR target, found by search.

Quality is continuous (the container stores hundredths), and both the file size and the PSNR grow
with it smoothly, so the quality for a target is found by a bracketing search over the hundredths
from ``QUALITY_MIN`` to ``QUALITY_MAX`` (:func:`search`): a handful of trial encodes. A trial need
not be a whole encode. g_a's features do not depend on the quality (only the gain applied to them
does), so a trial reuses them and runs the prior and the entropy coder only (size targets), or the prior, the
synthesis and the Wiener filter (PSNR targets). Size trials leave out the filter's bytes; the codec
checks the final file against the target and corrects the search when the filter (or the effort
search) moved it across.

A size target gives the largest quality whose file fits; a PSNR target the smallest quality that
reaches it. A target out of reach gives the nearest end of the range, with a warning.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .errors import VaecodecError
from .quality import QUALITY_DECIMALS, QUALITY_MAX, QUALITY_MIN

_SCALE = 10**QUALITY_DECIMALS
MAX_CORRECTIONS = 8  # whole encodes after the search, when the final file misses the target
CORRECTION_RANGE = 1.0  # a corrected search looks this far below the quality that missed first
PSNR_STEP = 0.05  # the quality step up when a final file falls short of a PSNR target


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of two uint8 images of one shape; 100 for identical ones."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else 10 * math.log10(255**2 / mse)


@dataclass(frozen=True)
class Target:
    """A size target (``bytes``, a file no larger than ``value`` bytes) or a quality target
    (``psnr``, a decoded PSNR of at least ``value`` dB)."""

    kind: Literal["bytes", "psnr"]
    value: float

    def met(self, measured: float) -> bool:
        return measured <= self.value if self.kind == "bytes" else measured >= self.value

    def describe(self, measured: float) -> str:
        return f"{measured:.0f} bytes" if self.kind == "bytes" else f"{measured:.2f} dB"


def target_of(pixels: int, quality: float | None, target_bpp: float | None, target_size: int | None,
              target_psnr: float | None) -> Target | None:
    """The target the options ask for (None: code at ``quality``); VaecodecError when more than one
    is given, or a quality with one, or a value that cannot be met by any file."""
    given = {k: v for k, v in (("target_bpp", target_bpp), ("target_size", target_size),
                               ("target_psnr", target_psnr)) if v is not None}
    if not given:
        return None
    if len(given) > 1 or quality is not None:
        names = [*given, *(["quality"] if quality is not None else [])]
        raise VaecodecError(f"{' and '.join(names)} exclude each other: give one")
    (name, value), = given.items()
    if not math.isfinite(value) or value <= 0:
        raise VaecodecError(f"{name} must be a positive number, got {value}")
    if name == "target_psnr":
        return Target("psnr", float(value))
    return Target("bytes", float(value) if name == "target_size" else value * pixels / 8)


def search(measure: Callable[[float], float], target: Target, lowest: float = QUALITY_MIN,
           highest: float = QUALITY_MAX) -> float:
    """The quality in [lowest, highest] (in the container's hundredths) that meets ``target`` best:
    the largest whose ``measure`` meets a size target, the smallest that meets a PSNR target.

    A bracketing search, assuming the measure grows with the quality: each step interpolates where
    the target lies between the bracket's ends (the size in log scale, the PSNR as it is), and the
    end that has not moved for two steps counts half (the Illinois rule), so that a curved measure
    does not leave one end stuck."""
    lo, hi = round(lowest * _SCALE), round(highest * _SCALE)
    # the end of the range where the target is met if it is met at all: the low qualities for a
    # size target, the high ones for a PSNR target; the search keeps one end on each side
    inside, outside = (lo, hi) if target.kind == "bytes" else (hi, lo)
    at_outside = measure(outside / _SCALE)
    if target.met(at_outside):
        return outside / _SCALE
    at_inside = measure(inside / _SCALE)
    if not target.met(at_inside):
        return unreachable(target, inside / _SCALE, at_inside)
    scale = math.log if target.kind == "bytes" else float
    goal = scale(target.value)
    f_in, f_out = scale(max(at_inside, 1e-9)) - goal, scale(max(at_outside, 1e-9)) - goal
    last = None
    while abs(outside - inside) > 1:
        t = 0.5 if f_out == f_in else f_in / (f_in - f_out)
        low, high = sorted((inside, outside))
        mid = min(max(round(inside + t * (outside - inside)), low + 1), high - 1)
        value = measure(mid / _SCALE)
        f_mid, met = scale(max(value, 1e-9)) - goal, target.met(value)
        if met:
            inside, f_in = mid, f_mid
            f_out = f_out / 2 if last is True else f_out  # Illinois: the end that stays loses weight
        else:
            outside, f_out = mid, f_mid
            f_in = f_in / 2 if last is False else f_in
        last = met
    return inside / _SCALE


def unreachable(target: Target, quality: float, measured: float) -> float:
    """The end of the range nearest to a target no quality meets, with a warning."""
    goal = f"{target.value:.0f} bytes" if target.kind == "bytes" else f"{target.value:g} dB"
    warnings.warn(f"no quality reaches {goal}: quality {quality:g} gives {target.describe(measured)}",
                  stacklevel=3)
    return quality
