"""EVBMF ranks (tnconv.vbmf) against known ranks and an independent closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tnconv.vbmf import evbmf


def _low_rank(rows: int, cols: int, rank: int, noise: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(rows, rank, generator=g, dtype=torch.float64)
    b = torch.randn(rank, cols, generator=g, dtype=torch.float64)
    return a @ b + noise * torch.randn(rows, cols, generator=g, dtype=torch.float64)


def _reference(y: np.ndarray) -> tuple[int, float]:
    """Nakajima et al. (2013) EVBMF written independently: numpy SVD, SciPy's bounded Brent
    minimisation of the free energy started from the same bracket."""
    from scipy.optimize import minimize_scalar

    if y.shape[0] > y.shape[1]:
        y = y.T
    L, M = y.shape
    alpha = L / M
    tau_bar = 2.5129 * math.sqrt(alpha)
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    s = np.linalg.svd(y, compute_uv=False)

    def energy(sigma2: float) -> float:
        x = s**2 / (M * sigma2)
        z1, z2 = x[x > x_bar], x[x <= x_bar]
        tau = 0.5 * (z1 - (1 + alpha) + np.sqrt((z1 - (1 + alpha)) ** 2 - 4 * alpha))
        return float(np.sum(z2 - np.log(z2)) + np.sum(z1 - tau) + np.sum(np.log((tau + 1) / z1))
                     + alpha * np.sum(np.log(tau / alpha + 1)))

    h = int(min(math.ceil(L / (1 + alpha)) - 1, L)) - 1
    upper = np.sum(s**2) / (L * M)
    lower = max(s[h + 1] ** 2 / (M * x_bar), np.mean(s[h + 1:] ** 2) / M)
    # a fine scan first, then Brent in the best cell (the free energy may have two minima)
    grid = np.geomspace(lower, upper, 400)
    k = int(np.argmin([energy(v) for v in grid]))
    res = minimize_scalar(energy, bounds=(grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]),
                          method="bounded", options={"xatol": 1e-14})
    sigma2 = float(res.x)
    threshold = math.sqrt(M * sigma2 * (1 + tau_bar) * (1 + alpha / tau_bar))
    return int(np.sum(s > threshold)), sigma2


@pytest.mark.parametrize("rows, cols, rank, noise", [
    (60, 80, 4, 0.1), (100, 50, 10, 0.5), (200, 300, 20, 1.0), (64, 576, 8, 0.3),
    (30, 30, 3, 0.05), (128, 576, 32, 0.5), (16, 144, 5, 0.2),
])
def test_recovers_the_true_rank(rows, cols, rank, noise):
    y = _low_rank(rows, cols, rank, noise, seed=rows + cols)
    result = evbmf(y)
    assert result.rank == rank
    # the noise variance estimate is close to the true one
    assert result.sigma2 == pytest.approx(noise**2, rel=0.25)
    assert result.values.shape == (rank,)
    # posterior means shrink the observed singular values
    s = torch.linalg.svdvals(y)[:rank]
    assert bool((result.values <= s + 1e-9).all()) and bool((result.values > 0).all())


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("shape", [(40, 90), (32, 288)])
def test_matches_an_independent_closed_form(seed, shape):
    g = torch.Generator().manual_seed(seed)
    rank = 1 + seed * 2
    noise = (0.05, 0.3, 1.0, 2.0, 0.5, 5.0)[seed]
    y = _low_rank(*shape, rank, noise, seed=100 + seed)
    y = y + 0.0 * torch.randn(shape, generator=g, dtype=torch.float64)
    ours = evbmf(y)
    ref_rank, ref_sigma2 = _reference(y.numpy())
    assert ours.rank == ref_rank
    assert ours.sigma2 == pytest.approx(ref_sigma2, rel=1e-4)


def test_pure_noise_has_rank_zero_and_orientation_does_not_matter():
    y = _low_rank(50, 120, 1, 1.0, seed=7) * 0 + torch.randn(
        50, 120, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert evbmf(y).rank == 0
    z = _low_rank(50, 120, 6, 0.4, seed=9)
    assert evbmf(z).rank == evbmf(z.T).rank == 6
    assert evbmf(z.float()).rank == 6  # float32 input, computed in float64


def test_given_noise_variance_sets_the_threshold():
    y = _low_rank(40, 100, 5, 0.2, seed=1)
    r = evbmf(y, sigma2=0.04)
    alpha = 0.4
    tau = 2.5129 * math.sqrt(alpha)
    assert r.threshold == pytest.approx(math.sqrt(100 * 0.04 * (1 + tau) * (1 + alpha / tau)))
    assert r.rank == int((torch.linalg.svdvals(y) > r.threshold).sum()) == 5
    # a huge noise variance leaves nothing
    assert evbmf(y, sigma2=1e6).rank == 0


def test_zero_matrix():
    assert evbmf(torch.zeros(4, 6)).rank == 0


@pytest.mark.parametrize("bad, error", [
    (torch.zeros(5), TypeError), (torch.zeros(3, 3, dtype=torch.int64), TypeError),
    ([[1.0, 2.0]], TypeError), (torch.zeros(1, 5), ValueError),
    (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), ValueError),
])
def test_bad_inputs(bad, error):
    with pytest.raises(error):
        evbmf(bad)


@pytest.mark.parametrize("sigma2", [0.0, -1.0, "x", True])
def test_bad_sigma2(sigma2):
    with pytest.raises(ValueError, match="sigma2"):
        evbmf(torch.randn(4, 6), sigma2=sigma2)
