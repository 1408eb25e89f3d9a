"""The encoder's two knobs: quality (-> the model's gain level -> its rate-distortion weight lambda)
and effort (-> gradient steps of the latent search).

Quality is a continuous knob from ``QUALITY_MIN`` (smallest files) to ``QUALITY_MAX`` (best
quality). The model is trained at a ladder of lambdas, one *level* each (level 0 is the lowest);
quality ``QUALITY_OF_LEVEL_0 + i`` names level ``i``, and fractions interpolate between levels.
Qualities below ``QUALITY_OF_LEVEL_0`` name negative levels, which extrapolate below the lowest
trained point (:class:`QualityScale`), so the knob reaches low rates without a second model. This is
the only place that maps one onto the other; the container stores the quality, never the level.

Nothing here imports torch: the CLI reads these constants for ``--help`` without paying for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import VaecodecError

QUALITY_MIN, QUALITY_MAX = 1.0, 10.0
DEFAULT_QUALITY = 7.0
QUALITY_OF_LEVEL_0 = 3.0
QUALITY_DECIMALS = 2  # the container stores hundredths

EFFORT_STEPS = (0, 10, 20)  # gradient steps per latent tile at effort 0, 1, 2 (vaecodec.refine)
EFFORT_MAX = len(EFFORT_STEPS) - 1
DEFAULT_EFFORT = 0


def check_quality(quality: float) -> float:
    """The quality as the container will store it; VaecodecError outside the range."""
    q = float(quality)
    if not QUALITY_MIN <= q <= QUALITY_MAX:
        raise VaecodecError(f"quality must be between {QUALITY_MIN:g} and {QUALITY_MAX:g}, got {q:g}")
    return round(q, QUALITY_DECIMALS)


def check_effort(effort: int) -> int:
    """The effort as an int; VaecodecError for anything but an integer in 0..EFFORT_MAX."""
    if isinstance(effort, bool) or not hasattr(effort, "__index__") or not 0 <= effort <= EFFORT_MAX:
        raise VaecodecError(f"effort must be an integer from 0 to {EFFORT_MAX}, got {effort!r}")
    return int(effort)


def level_of(quality: float) -> float:
    """The model's (fractional) gain level for a quality; negative below the lowest trained one."""
    return quality - QUALITY_OF_LEVEL_0


MIN_LEVEL = level_of(QUALITY_MIN)
LEVELS = int(level_of(QUALITY_MAX)) + 1  # trained levels a model needs for the whole knob


class QualityScale:
    """The ladder of a model's trained lambdas, and the interpolation every per-level quantity
    follows: the quality gains of y (:class:`vaecodec.transforms.QualityGains`) and lambda itself.

    Between trained levels, a quantity is interpolated geometrically (its logarithm linearly).
    Below level 0 (down to ``MIN_LEVEL``) every channel moves by the same log-step, the mean step per
    level over all channels and levels: a per-channel extrapolation would amplify channels whose gain
    is not monotone between the two lowest levels and could *raise* the rate.
    """

    def __init__(self, lambdas: Sequence[float]) -> None:
        self.lambdas = list(lambdas)

    @property
    def levels(self) -> int:
        return len(self.lambdas)

    def interpolate(self, log_table: Any, level: Any) -> Any:
        """exp of ``log_table`` (levels, C) at float levels (B,) -> (B, C): a torch computation,
        written on the tensors' own methods so that this module need not import torch."""
        level = level.clamp(MIN_LEVEL, self.levels - 1)
        lo = level.floor().long().clamp(0, self.levels - 2)
        frac = (level.clamp(min=0) - lo.to(level.dtype))[:, None]
        log_value = (1 - frac) * log_table[lo] + frac * log_table[lo + 1]
        slope = (log_table[-1] - log_table[0]).mean() / (self.levels - 1)
        return (log_value + level.clamp(max=0)[:, None] * slope).exp()
