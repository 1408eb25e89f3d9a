"""Bjøntegaard delta rate with piecewise cubic (PCHIP) interpolation in log-rate.

Each curve is turned into log(rate) as a function of PSNR, interpolated with a monotone piecewise
cubic Hermite spline (Fritsch-Carlson slopes, as scipy's PchipInterpolator), and the two are averaged
over the PSNR range both cover. BD-rate is ``exp(mean difference) - 1`` in percent: negative means
the test codec needs fewer bits than the anchor for the same PSNR.
"""

from __future__ import annotations

import numpy as np


def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    h = np.diff(x)
    delta = np.diff(y) / h
    d = np.zeros_like(y)
    if len(x) == 2:
        return np.full_like(y, delta[0])
    for k in range(1, len(x) - 1):
        if delta[k - 1] * delta[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])

    def edge(h0: float, h1: float, d0: float, d1: float) -> float:
        s = ((2 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
        if np.sign(s) != np.sign(d0):
            return 0.0
        if np.sign(d0) != np.sign(d1) and abs(s) > 3 * abs(d0):
            return 3 * d0
        return s

    d[0] = edge(h[0], h[1], delta[0], delta[1])
    d[-1] = edge(h[-1], h[-2], delta[-1], delta[-2])
    return d


def pchip(x: np.ndarray, y: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Evaluate the PCHIP interpolant of (x, y) (x strictly increasing) at xs within [x0, xn]."""
    d = _pchip_slopes(x, y)
    k = np.clip(np.searchsorted(x, xs, side="right") - 1, 0, len(x) - 2)
    h = x[k + 1] - x[k]
    t = (xs - x[k]) / h
    h00, h10 = (1 + 2 * t) * (1 - t) ** 2, t * (1 - t) ** 2
    h01, h11 = t**2 * (3 - 2 * t), t**2 * (t - 1)
    return h00 * y[k] + h10 * h * d[k] + h01 * y[k + 1] + h11 * h * d[k + 1]


def _curve(rate, psnr) -> tuple[np.ndarray, np.ndarray]:
    # a lossless point (infinite PSNR) or a missing value has no place on a rate-PSNR curve
    pts = sorted({float(q): float(r) for r, q in zip(rate, psnr, strict=True)
                  if np.isfinite(q) and np.isfinite(r) and r > 0}.items())
    if len(pts) < 2:
        raise ValueError("a curve needs at least two distinct points")
    q, r = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    return q, np.log(r)


def _span(qa: np.ndarray, qt: np.ndarray) -> tuple[float, float] | None:
    lo, hi = max(qa[0], qt[0]), min(qa[-1], qt[-1])
    return (float(lo), float(hi)) if hi > lo else None


def overlap(anchor_rate, anchor_psnr, test_rate, test_psnr) -> tuple[float, float] | None:
    """The PSNR interval (dB) both curves cover, over which :func:`bd_rate` averages; None if they
    do not overlap. Worth printing next to a BD-rate: one averaged over a fraction of a dB says little."""
    return _span(_curve(anchor_rate, anchor_psnr)[0], _curve(test_rate, test_psnr)[0])


def bd_rate(anchor_rate, anchor_psnr, test_rate, test_psnr, samples: int = 2001) -> float:
    """BD-rate of test vs anchor in percent; NaN if the PSNR ranges do not overlap."""
    qa, la = _curve(anchor_rate, anchor_psnr)
    qt, lt = _curve(test_rate, test_psnr)
    span = _span(qa, qt)
    if span is None:
        return float("nan")
    grid = np.linspace(*span, samples)
    diff = pchip(qt, lt, grid) - pchip(qa, la, grid)
    mean = np.sum((diff[1:] + diff[:-1]) * np.diff(grid)) / 2 / (span[1] - span[0])  # trapezoid rule
    return float((np.exp(mean) - 1) * 100)


def point_vs_curve(anchor_rate, anchor_psnr, rate: float, psnr: float) -> float:
    """Rate of one (rate, PSNR) point against the rate the anchor curve needs for the same PSNR
    (the same piecewise cubic in log-rate), in percent; NaN outside the curve's PSNR range. The
    one-point form of the BD-rate, for a model that has one rate point (a single-rate model)."""
    qa, la = _curve(anchor_rate, anchor_psnr)
    if not qa[0] <= psnr <= qa[-1]:
        return float("nan")
    return float((rate / np.exp(pchip(qa, la, np.array([psnr]))[0]) - 1) * 100)
