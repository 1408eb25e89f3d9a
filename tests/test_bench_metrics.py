"""Known-answer tests of the benchmark's metrics and BD-rate (fast, CPU only, no shared data)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.bdrate import bd_rate, overlap, point_vs_curve
from bench.metrics import K1, MS_SSIM_WEIGHTS, ms_ssim, psnr
from bench.peers import avif_quality

RATES = [0.2, 0.4, 0.7, 1.1, 1.6, 2.2]
PSNRS = [26.0, 28.5, 31.0, 33.2, 35.1, 37.0]


def test_psnr_known_values() -> None:
    a = np.zeros((4, 4, 3), np.uint8)
    assert psnr(a, a) == float("inf")
    assert psnr(a, a + 1) == pytest.approx(20 * np.log10(255))  # MSE 1
    b = a.copy()
    b[0, 0, 0] = 255  # MSE = 255^2 / 48
    assert psnr(a, b) == pytest.approx(10 * np.log10(48))


def _ms_ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Independent MS-SSIM: explicit 2-D window sums per pixel (no separable filtering), numpy."""
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    win = np.outer(g, g) / g.sum() ** 2
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    x, y = a.astype(np.float64).transpose(2, 0, 1), b.astype(np.float64).transpose(2, 0, 1)
    weights = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]
    result = np.ones(x.shape[0])
    for level, w in enumerate(weights):
        views = [np.lib.stride_tricks.sliding_window_view(v, (11, 11), axis=(1, 2))
                 for v in (x, y, x * x, y * y, x * y)]
        mx, my, xx, yy, xy = (np.einsum("chwij,ij->chw", v, win) for v in views)
        vx, vy, cov = xx - mx**2, yy - my**2, xy - mx * my
        cs = (2 * cov + c2) / (vx + vy + c2)
        term = cs if level < 4 else cs * (2 * mx * my + c1) / (mx**2 + my**2 + c1)
        result *= np.maximum(term.mean(axis=(1, 2)), 0) ** w
        if level < 4:  # 2x2 mean; odd sides zero-padded on both ends (avg_pool2d, padding=1)
            x, y = (np.pad(v, [(0, 0), (v.shape[1] % 2,) * 2, (v.shape[2] % 2,) * 2]) for v in (x, y))
            h, wd = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
            x, y = (v[:, :h, :wd].reshape(-1, h // 2, 2, wd // 2, 2).mean(axis=(2, 4)) for v in (x, y))
    return float(result.mean())


def test_ms_ssim_identical_is_one() -> None:
    a = np.random.default_rng(0).integers(0, 256, (176, 180, 3), dtype=np.uint8)
    assert ms_ssim(a, a) == pytest.approx(1.0, abs=1e-6)


def test_ms_ssim_matches_independent_implementation_odd_sizes() -> None:
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (45, 47, 3)).astype(np.float64)
    a = np.clip(np.kron(base, np.ones((4, 4, 1)))[:177, :183] + rng.normal(0, 8, (177, 183, 3)), 0, 255)
    a = a.astype(np.uint8)
    b = np.clip(a + rng.normal(0, 12, a.shape), 0, 255).astype(np.uint8)
    ours = ms_ssim(a, b)
    assert 0.5 < ours < 1.0
    # bench.metrics runs in float32 (centred); the float64 reference bounds its error
    assert ours == pytest.approx(_ms_ssim_reference(a, b), abs=2e-6)


@pytest.mark.parametrize("factor", [0.5, 0.8, 1.25, 2.0])
def test_bd_rate_of_scaled_curve(factor: float) -> None:
    """A curve against itself with every rate times ``factor`` is exactly (factor - 1) * 100 %."""
    assert bd_rate(RATES, PSNRS, [r * factor for r in RATES], PSNRS) == pytest.approx((factor - 1) * 100,
                                                                                     abs=1e-9)


def test_point_vs_curve_known_answers() -> None:
    # on the curve: 0; the same PSNR for 10 % more bits: +10 %; outside the PSNR range: NaN
    assert point_vs_curve(RATES, PSNRS, RATES[2], PSNRS[2]) == pytest.approx(0, abs=1e-9)
    assert point_vs_curve(RATES, PSNRS, 1.1 * RATES[1], PSNRS[1]) == pytest.approx(10, abs=1e-9)
    assert math.isnan(point_vs_curve(RATES, PSNRS, RATES[0], min(PSNRS) - 1))


def test_bd_rate_self_is_zero_and_antisymmetric() -> None:
    assert bd_rate(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0, abs=1e-12)
    other = ([0.15, 0.3, 0.6, 1.0, 1.7], [25.5, 28.0, 31.2, 33.5, 36.0])
    forward, backward = bd_rate(RATES, PSNRS, *other), bd_rate(*other, RATES, PSNRS)
    assert (1 + forward / 100) * (1 + backward / 100) == pytest.approx(1, abs=1e-9)


def test_bd_rate_linear_log_rate_known_answer() -> None:
    """log-rate linear in PSNR for both curves (PCHIP is exact there): a shift of 1 dB at slope
    0.2 / dB in log-rate means exp(-0.2) - 1 fewer bits on the overlap."""
    q = np.linspace(26, 38, 7)
    anchor = np.exp(0.2 * (q - 30))
    test = np.exp(0.2 * (q - 1 - 30))
    assert bd_rate(anchor, q, test, q) == pytest.approx((np.exp(-0.2) - 1) * 100, abs=1e-9)


def test_bd_rate_without_overlap_is_nan() -> None:
    assert np.isnan(bd_rate([0.1, 0.2], [20, 21], [0.5, 1.0], [30, 31]))
    assert overlap([0.1, 0.2], [20, 21], [0.5, 1.0], [30, 31]) is None
    assert overlap(RATES, PSNRS, RATES[1:], PSNRS[1:]) == pytest.approx((28.5, 37.0))


def test_bd_rate_ignores_a_lossless_point() -> None:
    assert bd_rate([*RATES, 8.0], [*PSNRS, float("inf")], RATES, PSNRS) == pytest.approx(0, abs=1e-9)


# Per-quality means over the 24 Kodak images in ../shared/reference/kodak_conventional_measured.csv
# (Pillow JPEG 4:2:0 at qualities 3..90, Pillow WebP method 6 at qualities 0..95): (bpp, PSNR dB).
JPEG420 = [(0.18183, 21.6835), (0.22115, 23.8522), (0.28474, 25.8486), (0.32659, 26.6718),
           (0.4231, 28.1448), (0.50827, 29.1445), (0.65979, 30.4915), (0.78557, 31.422),
           (0.90552, 32.1738), (1.03659, 32.9076), (1.23876, 33.9167), (1.57024, 35.37), (2.34632, 38.034)]
WEBP = [(0.10257, 25.6749), (0.1742, 27.3661), (0.21742, 28.1086), (0.27442, 28.9319),
        (0.37749, 30.1936), (0.47621, 31.2283), (0.57722, 32.2019), (0.67273, 33.0089),
        (0.76866, 33.7324), (0.87726, 34.4809), (1.15431, 36.1841), (1.92966, 39.4463), (2.79823, 41.6598)]


def test_bd_rate_reproduces_the_published_webp_number() -> None:
    """The reference README gives WebP -42 % vs JPEG 4:2:0 (scipy's PCHIP and quad: -41.7018)."""
    unzip = lambda pts: ([p[0] for p in pts], [p[1] for p in pts])  # noqa: E731
    assert bd_rate(*unzip(JPEG420), *unzip(WEBP)) == pytest.approx(-41.7018, abs=1e-3)


def test_ms_ssim_of_flat_images_is_the_coarsest_luminance_term() -> None:
    """Flat images: every contrast-structure term is 1, so MS-SSIM = l ** w5. Bright flat images are
    where float32 variances cancel worst, which the centring in bench.metrics keeps below 1e-5."""
    a, c1 = 100.0, (K1 * 255) ** 2
    x = np.full((176, 176, 3), a, np.uint8)
    for b in (110.0, 200.0, 255.0):
        expected = ((2 * a * b + c1) / (a**2 + b**2 + c1)) ** MS_SSIM_WEIGHTS[-1]
        assert ms_ssim(x, np.full_like(x, b)) == pytest.approx(expected, abs=1e-5)


def test_avif_quality_inverts_libavif_mapping() -> None:
    for quantizer in range(64):
        assert ((100 - avif_quality(quantizer)) * 63 + 50) // 100 == quantizer


def test_stage_timer_reaches_every_stage_and_restores_the_codec(codec, make_image, tmp_path) -> None:
    """bench.speed times vaecodec's stages by wrapping what Codec calls; a refactor that bypasses a
    wrapped name must fail here, not silently move time into "other"."""
    from PIL import Image

    from bench import speed

    path = tmp_path / "x.png"
    Image.fromarray(make_image(32, 48)).save(path)
    before = (codec.model.g_a, speed.entropy.encode, speed.image.load, speed.entropy.StreamDecoder.z)
    split = speed.stage_split(codec, [path], quality=4, repeat=1)
    assert set(split) == {f"{side}: {stage}" for side in ("encode", "decode") for stage in speed.STAGES}
    assert all(v > 0 for k, v in split.items() if not k.endswith("other"))
    assert (codec.model.g_a, speed.entropy.encode, speed.image.load, speed.entropy.StreamDecoder.z) == before
