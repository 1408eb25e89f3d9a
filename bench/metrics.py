"""Image quality metrics of the benchmarks: PSNR and MS-SSIM on 8-bit RGB, computed the CompressAI way.

Published learned-codec curves (CompressAI's ``eval_model``, most papers) use PSNR over all RGB
samples and ``pytorch_msssim.ms_ssim(data_range=255)``: the 5-scale MS-SSIM of Wang, Simoncelli and
Bovik (2003) computed **per RGB channel** and averaged over the channels, with an 11x11 Gaussian
window (sigma 1.5, applied separably and without padding), K1 = 0.01, K2 = 0.03, scale weights
(0.0448, 0.2856, 0.3001, 0.2363, 0.1333), negative contrast terms clipped to zero, and 2x2 average
pooling between scales (zero padding on odd sizes, counted in the average). :func:`ms_ssim`
computes exactly that, so our numbers sit on the same axis as the published ones without depending
on pytorch_msssim. It runs in float32 like CompressAI (float64 is 10x slower on CPU) but on images
centred on 128, which makes it closer to the exact value than an uncentred float32 computation.
Measured agreement with independent measurements is in ``bench/rd.py``'s docstring.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch.nn import functional as F

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW, SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03
DATA_RANGE = 255.0
CENTER = 128.0  # subtracted before the statistics; see _ssim_terms
# 4 halvings must leave at least one full window, as pytorch_msssim requires
MS_SSIM_MIN_SIDE = (WINDOW - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1) + 1


def psnr(a: ArrayLike, b: ArrayLike) -> float:
    """PSNR in dB of two 8-bit-range images (arrays or PIL images) of equal shape, over all their
    samples (inf if identical)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * float(np.log10(DATA_RANGE**2 / mse))


def _window() -> torch.Tensor:
    x = torch.arange(WINDOW, dtype=torch.float64) - WINDOW // 2
    g = torch.exp(-(x**2) / (2 * SIGMA**2))
    return (g / g.sum()).float()


def _blur(x: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of every channel of (1, C, H, W), 'valid' region only."""
    c = x.shape[1]
    x = F.conv2d(x, win.view(1, 1, 1, -1).expand(c, 1, 1, WINDOW), groups=c)
    return F.conv2d(x, win.view(1, 1, -1, 1).expand(c, 1, WINDOW, 1), groups=c)


def _ssim_terms(x: torch.Tensor, y: torch.Tensor, win: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean SSIM and mean contrast-structure term of (1, C, H, W) images centred on
    ``CENTER``. Centring does not change the result but keeps float32 variances E[x^2] - mu^2 from
    cancelling catastrophically on bright flat areas (uncentred: errors up to 1e-4 in MS-SSIM)."""
    c1, c2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2
    c = x.shape[1]
    # all five local statistics in one grouped convolution
    mu_x, mu_y, xx, yy, xy = _blur(torch.cat([x, y, x * x, y * y, x * y], dim=1), win).split(c, dim=1)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    mu_x, mu_y = mu_x + CENTER, mu_y + CENTER
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (luminance * cs).mean(dim=(0, 2, 3)), cs.mean(dim=(0, 2, 3))


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM of two uint8 RGB (H, W, 3) images, per channel and averaged over channels.

    NaN when the shorter side is below MS_SSIM_MIN_SIDE (161 px), where the 5-scale index is not
    defined; such images are reported without MS-SSIM rather than with a different formula.
    """
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"need two (H, W, C) images of equal shape, got {a.shape} and {b.shape}")
    if min(a.shape[:2]) < MS_SSIM_MIN_SIDE:
        return float("nan")
    x, y = (torch.from_numpy(np.array(v, dtype=np.float32) - CENTER).permute(2, 0, 1)[None] for v in (a, b))
    win = _window()
    factors = []
    with torch.no_grad():
        for level in range(len(MS_SSIM_WEIGHTS)):
            ssim, cs = _ssim_terms(x, y, win)
            if level == len(MS_SSIM_WEIGHTS) - 1:
                factors.append(torch.relu(ssim))
            else:
                factors.append(torch.relu(cs))
                # pooling pads odd sizes with zeros of the uncentred image, as pytorch_msssim does
                pad = [s % 2 for s in x.shape[2:]]
                x, y = (F.avg_pool2d(v + CENTER, kernel_size=2, padding=pad) - CENTER for v in (x, y))
        weights = torch.tensor(MS_SSIM_WEIGHTS)[:, None]
        per_channel = torch.prod(torch.stack(factors) ** weights, dim=0)
    return float(per_channel.mean())
