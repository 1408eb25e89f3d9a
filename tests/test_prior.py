"""The integer hyper-synthesis h_s decides every probability, so it must be bit-exact everywhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaecodec.prior import (
    ACT_MAX_INT,
    EXACT_LIMIT,
    MEAN_CLAMP,
    NUM_SCALES,
    Z_CLAMP,
    IntegerHyperSynthesis,
    hs_layers,
)


@pytest.fixture(scope="module")
def h_s(codec) -> IntegerHyperSynthesis:
    return codec.model.latent.h_s


@pytest.fixture(scope="module")
def n_z(codec) -> int:
    return codec.model.config.n


def _random_z(n: int, batch: int, h: int, w: int, seed: int, lo: int = -20, hi: int = 20) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(lo, hi + 1, (batch, n, h, w), dtype=np.int64))


def _extreme_z(n: int, seed: int, h: int = 3, w: int = 2) -> torch.Tensor:
    z = _random_z(n, 1, h, w, seed)
    z[0, ::3, 0, 0] = 5000
    z[0, 1::3, 1, 1] = -5000
    z[0, 2::5, 2, :] = Z_CLAMP
    return z


def _assert_same(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype == torch.int64
        assert torch.equal(x, y)


# ---- independent int64 reference --------------------------------------------------------------


def _ref_conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Stride-1 'same' convolution; x (B, Cin, H, W), w (Cout, Cin, k, k), all int64."""
    p = k // 2
    bsz, cin, h, wd = x.shape
    xp = np.zeros((bsz, cin, h + 2 * p, wd + 2 * p), dtype=np.int64)
    xp[:, :, p : p + h, p : p + wd] = x
    out = np.zeros((bsz, w.shape[0], h, wd), dtype=np.int64) + b[None, :, None, None]
    for dy in range(k):
        for dx in range(k):
            patch = xp[:, :, dy : dy + h, dx : dx + wd]
            out += np.einsum("bchw,oc->bohw", patch, w[:, :, dy, dx])
    return out


def _ref_conv_transpose2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, k: int, s: int) -> np.ndarray:
    """Transposed convolution, padding k//2, output_padding s-1; w (Cin, Cout, k, k), all int64."""
    p = k // 2
    bsz, _, h, wd = x.shape
    cout = w.shape[1]
    full = np.zeros((bsz, cout, (h - 1) * s + k + s - 1, (wd - 1) * s + k + s - 1), dtype=np.int64)
    for dy in range(k):
        for dx in range(k):
            contrib = np.einsum("bchw,co->bohw", x, w[:, :, dy, dx])
            full[:, :, dy : dy + s * (h - 1) + 1 : s, dx : dx + s * (wd - 1) + 1 : s] += contrib
    ho, wo = (h - 1) * s - 2 * p + k + s - 1, (wd - 1) * s - 2 * p + k + s - 1
    return full[:, :, p : p + ho, p : p + wo] + b[None, :, None, None]


def _ref_round_shift(acc: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """floor((acc + 2**(s-1)) / 2**s) per output channel; s == 0 leaves acc unchanged."""
    out = acc.copy()
    for c, s in enumerate(shift.tolist()):
        if s > 0:
            out[:, c] = (acc[:, c] + (1 << (s - 1))) // (1 << s)
    return out


def reference_h_s(net: IntegerHyperSynthesis, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.clip(z.astype(np.int64), -Z_CLAMP, Z_CLAMP)
    for i, (kind, _cin, _cout, k, s) in enumerate(net.spec):
        w, b, shift = (t.cpu().numpy().astype(np.int64) for t in net.params(i))
        if kind == "deconv":
            acc = _ref_conv_transpose2d(x, w, b, k, s)
        else:
            assert s == 1
            acc = _ref_conv2d(x, w, b, k)
        assert np.abs(acc).max() < EXACT_LIMIT
        x = _ref_round_shift(acc, shift)
        if i < len(net.spec) - 1:
            x = np.clip(x, 0, ACT_MAX_INT)
    m = net.m
    return np.clip(x[:, :m], -MEAN_CLAMP, MEAN_CLAMP), np.clip(x[:, m:], 0, NUM_SCALES - 1)


def _small_random_net(seed: int) -> IntegerHyperSynthesis:
    """A tiny integer network with small shifts (including 0), so rounding ties are frequent."""
    gen = torch.Generator().manual_seed(seed)
    spec = hs_layers(4, 6)
    weights, biases, shifts = [], [], []
    for kind, cin, cout, k, _s in spec:
        shape = (cin, cout, k, k) if kind == "deconv" else (cout, cin, k, k)
        weights.append(torch.randint(-300, 301, shape, generator=gen))
        biases.append(torch.randint(-5000, 5001, (cout,), generator=gen))
        shifts.append(torch.randint(0, 7, (cout,), generator=gen))
    shifts[-1][0] = 0
    shifts[-1][-1] = 0
    return IntegerHyperSynthesis(spec, weights, biases, shifts)


# ---- tests ------------------------------------------------------------------------------------


def test_reference_matches_shipped_h_s(h_s, n_z):
    cases = [_random_z(n_z, 2, 3, 2, seed=0), _random_z(n_z, 1, 2, 3, 1, lo=-3, hi=3), _extreme_z(n_z, 2)]
    for z in cases:
        mean, index = h_s(z)
        ref_mean, ref_index = reference_h_s(h_s, z.numpy())
        assert mean.shape == (z.shape[0], h_s.m, 4 * z.shape[2], 4 * z.shape[3])
        assert np.array_equal(mean.numpy(), ref_mean)
        assert np.array_equal(index.numpy(), ref_index)


def test_reference_matches_small_net_with_ties():
    net = _small_random_net(seed=11)
    z = _random_z(4, 2, 3, 4, seed=12, lo=-40, hi=40)
    mean, index = net(z)
    ref_mean, ref_index = reference_h_s(net, z.numpy())
    assert np.array_equal(mean.numpy(), ref_mean)
    assert np.array_equal(index.numpy(), ref_index)
    assert len(np.unique(ref_index)) > 1 and len(np.unique(ref_mean)) > 10  # not a degenerate test


def test_outputs_in_range(h_s, n_z):
    mean, index = h_s(_extreme_z(n_z, 3))
    assert int(index.min()) >= 0 and int(index.max()) <= NUM_SCALES - 1
    assert int(mean.abs().max()) <= MEAN_CLAMP


def test_extreme_z_is_clamped(h_s, n_z):
    z = _extreme_z(n_z, 4)
    assert int(z.abs().max()) > Z_CLAMP
    _assert_same(h_s(z), h_s(z.clamp(-Z_CLAMP, Z_CLAMP)))


def test_thread_count_does_not_matter(h_s, n_z):
    z = torch.cat([_random_z(n_z, 2, 3, 3, seed=5), _extreme_z(n_z, 6, 3, 3)])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = h_s(z)
        torch.set_num_threads(2)
        two = h_s(z)
    finally:
        torch.set_num_threads(before)
    _assert_same(one, two)


def test_channels_last_input(h_s, n_z):
    z = _random_z(n_z, 2, 3, 4, seed=7)
    z_cl = z.to(memory_format=torch.channels_last)
    assert not z_cl.is_contiguous()
    assert z_cl.to(torch.float64).is_contiguous(memory_format=torch.channels_last)  # layout reaches the net
    _assert_same(h_s(z), h_s(z_cl))
    _assert_same(h_s(z), h_s(z.to(torch.float64).to(memory_format=torch.channels_last)))


def test_batch_equals_single(h_s, n_z):
    z = torch.cat([_random_z(n_z, 2, 3, 2, seed=8), _extreme_z(n_z, 9)], dim=0)
    assert z.shape[0] == 3
    mean, index = h_s(z)
    for i in range(3):
        _assert_same((mean[i : i + 1], index[i : i + 1]), h_s(z[i : i + 1]))


def test_check_exact_rejects_huge_weight(h_s):
    weights, biases, shifts = [], [], []
    for i in range(len(h_s.spec)):
        w, b, s = (t.clone() for t in h_s.params(i))
        weights.append(w)
        biases.append(b)
        shifts.append(s)
    IntegerHyperSynthesis(h_s.spec, weights, biases, shifts)  # the shipped values pass
    weights[1][0, 0, 0, 0] = 2**45
    with pytest.raises(ValueError, match="layer 1"):
        IntegerHyperSynthesis(h_s.spec, weights, biases, shifts)


def test_check_exact_on_modified_buffer():
    net = _small_random_net(seed=13)
    net.check_exact()
    net.b2[0] = 2**53
    with pytest.raises(ValueError):
        net.check_exact()


def test_gaussian_bits_matches_float64_and_keeps_a_gradient_in_the_tail():
    from vaecodec.prior import gaussian_bits

    gen = torch.Generator().manual_seed(0)
    y = torch.randn(5000, generator=gen) * 5
    mean = torch.randn(5000, generator=gen)
    scale = torch.exp(torch.rand(5000, generator=gen) * 7 - 2.2)
    d, s = (y.double() - mean.double()).abs(), scale.double()
    exact = -torch.log2(torch.special.ndtr((0.5 - d) / s) - torch.special.ndtr((-0.5 - d) / s))
    ok = exact < 50  # beyond that float64's own ndtr difference underflows
    assert torch.allclose(gaussian_bits(y, mean, scale).double()[ok], exact[ok], atol=0.05)

    # A residual 40 scales out: a clamped likelihood would give no gradient here.
    s = torch.tensor([0.11], requires_grad=True)
    bits = gaussian_bits(torch.tensor([5.0]), torch.tensor([0.0]), s)
    bits.backward()
    assert torch.isfinite(bits).all() and bits.item() > 100
    assert s.grad.item() < 0  # a larger scale lowers the rate


def test_bound_only_passes_gradients_that_pull_values_back_inside():
    from training.model import bound

    x = torch.tensor([-3.0, -3.0, 1.0, 5.0, 5.0], requires_grad=True)
    out = bound(x, 0.0, 4.0)
    assert out.tolist() == [0.0, 0.0, 1.0, 4.0, 4.0]
    # d(loss)/d(out) = [+1, -1, +1, +1, -1]: descent moves x by -grad, so what passes is the second
    # (below the range, moved up), the fourth (above it, moved down) and the one inside.
    out.backward(torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0]))
    assert x.grad.tolist() == [0.0, -1.0, 1.0, 1.0, 0.0]
