"""Empirical variational Bayesian matrix factorization (EVBMF): a rank from one matrix.

The global analytic solution of fully observed VBMF (Nakajima, Sugiyama, Babacan and
Tomioka, "Global analytic solution of fully-observed variational Bayesian matrix
factorization", JMLR 14, 2013), with the noise variance estimated by minimising the free
energy (the *empirical* variant). Kim et al. ("Compression of deep convolutional neural
networks for fast and low power mobile applications", ICLR 2016) use it to choose the
Tucker-2 ranks of every convolution without data: the rank is the number of singular values
above the EVBMF threshold ``sqrt(M sigma^2 (1 + tau) (1 + alpha / tau))``.

Array level: a matrix in, a rank out; the singular values come from
:func:`tnconv.decomp.svdvals` (float64), the one-dimensional minimisation over the noise
variance is a log-spaced scan refined by golden-section search (no SciPy needed).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from .decomp import svdvals

__all__ = ["EVBMFResult", "evbmf"]

#: ``tau_bar / sqrt(alpha)``: the constant of Nakajima et al. (2013), Theorem 3.
_TAU_CONST = 2.5129
_SCAN = 400
_GOLDEN = (math.sqrt(5) - 1) / 2


class EVBMFResult(NamedTuple):
    """What :func:`evbmf` finds.

    Attributes
    ----------
    rank
        Number of singular values above the EVBMF threshold.
    sigma2
        The estimated (or given) noise variance per matrix entry.
    threshold
        The singular-value threshold ``sqrt(M sigma2 (1 + tau) (1 + alpha / tau))``.
    values
        The posterior-mean singular values of the ``rank`` kept components (float64, CPU).
    """

    rank: int
    sigma2: float
    threshold: float
    values: torch.Tensor


def _free_energy(sigma2: float, L: int, M: int, s2: np.ndarray, residual: float,
                 xubar: float) -> float:
    """The free energy (up to constants) of Nakajima et al. (2013) as a function of sigma2.

    A scalar function of a short vector, evaluated a few hundred times: NumPy (not torch,
    whose per-call overhead dominates here).
    """
    alpha = L / M
    x = s2 / (M * sigma2)
    big = x > xubar
    z1, z2 = x[big], x[~big]
    d = z1 - (1 + alpha)
    t1 = 0.5 * (d + np.sqrt(np.maximum(d * d - 4 * alpha, 0.0)))
    obj = (np.sum(z2 - np.log(np.maximum(z2, 1e-300))) + np.sum(z1 - t1)
           + np.sum(np.log((t1 + 1) / z1)) + alpha * np.sum(np.log(t1 / alpha + 1)))
    return float(obj) + residual / (M * sigma2) + (L - s2.size) * math.log(sigma2)


def _minimise(f: object, lo: float, hi: float) -> float:
    """Minimum of ``f`` on ``[lo, hi]``: a log-spaced scan, then golden-section refinement."""
    grid = np.geomspace(lo, hi, _SCAN).tolist()
    values = [f(g) for g in grid]  # type: ignore[operator]
    k = min(range(len(grid)), key=values.__getitem__)
    a, b = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = f(c), f(d)  # type: ignore[operator]
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = f(c)  # type: ignore[operator]
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = f(d)  # type: ignore[operator]
    best = min((values[k], grid[k]), (fc, c), (fd, d))
    return best[1]


def evbmf(matrix: torch.Tensor, *, sigma2: float | None = None) -> EVBMFResult:
    """The EVBMF rank of a matrix (Nakajima et al. 2013, global analytic solution).

    Parameters
    ----------
    matrix
        A 2-D floating tensor ``L x M`` (either orientation: it is transposed so that
        ``L <= M``). Computed in float64.
    sigma2
        The noise variance per entry, when known; by default estimated by minimising the
        free energy over ``[lower, upper]`` bounds of Nakajima et al.

    Returns
    -------
    EVBMFResult
        ``(rank, sigma2, threshold, values)``.

    Raises
    ------
    TypeError
        ``matrix`` is not a 2-D floating tensor.
    ValueError
        A matrix with a side of 1 or fewer, non-finite entries, or ``sigma2 <= 0``.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> a, b = torch.randn(60, 4, generator=g), torch.randn(4, 80, generator=g)
    >>> noisy = a @ b + 0.1 * torch.randn(60, 80, generator=g)
    >>> evbmf(noisy).rank
    4
    """
    if not isinstance(matrix, torch.Tensor) or matrix.dim() != 2 or not (
            matrix.is_floating_point()):
        raise TypeError(f"matrix must be a 2-D floating torch.Tensor, got "
                        f"{type(matrix).__name__}"
                        + (f" of shape {tuple(matrix.shape)}, dtype {matrix.dtype}"
                           if isinstance(matrix, torch.Tensor) else ""))
    if min(matrix.shape) < 2:
        raise ValueError(f"evbmf needs a matrix with both sides >= 2, got {tuple(matrix.shape)}")
    y = matrix.detach().to(torch.float64)
    if not bool(torch.isfinite(y).all()):
        raise ValueError("matrix has non-finite entries (NaN or Inf)")
    if y.shape[0] > y.shape[1]:
        y = y.t()
    L, M = int(y.shape[0]), int(y.shape[1])
    alpha = L / M
    tauubar = _TAU_CONST * math.sqrt(alpha)
    xubar = (1 + tauubar) * (1 + alpha / tauubar)
    s = svdvals(y).to("cpu", torch.float64)
    s2 = s * s
    if float(s2[0]) == 0.0:
        return EVBMFResult(0, 0.0, 0.0, s[:0])
    if sigma2 is None:
        sigma2 = _estimate_sigma2(L, M, s2, xubar)
    elif isinstance(sigma2, bool) or not isinstance(sigma2, (int, float)) or not sigma2 > 0:
        raise ValueError(f"sigma2 must be a positive number or None, got {sigma2!r}")
    threshold = math.sqrt(M * sigma2 * (1 + tauubar) * (1 + alpha / tauubar))
    rank = int((s > threshold).sum())
    kept = s[:rank]
    ratio = (L + M) * sigma2 / kept**2
    values = kept / 2 * (1 - ratio + torch.sqrt(
        ((1 - ratio) ** 2 - 4 * L * M * sigma2**2 / kept**4).clamp_min(0.0)))
    return EVBMFResult(rank, float(sigma2), threshold, values)


def _estimate_sigma2(L: int, M: int, s2_t: torch.Tensor, xubar: float) -> float:
    """The free-energy minimiser over Nakajima et al.'s bracket of the noise variance."""
    alpha = L / M
    s2 = s2_t.numpy()
    h_ub = int(min(math.ceil(L / (1 + alpha)) - 1, L)) - 1
    upper = float(s2.sum()) / (L * M)
    tail = s2[h_ub + 1:]
    lower = max(float(s2[h_ub + 1]) / (M * xubar), float(tail.mean()) / M) if tail.size else 0
    lower = max(lower, upper * 1e-12)
    if lower >= upper:
        return upper
    return _minimise(lambda v: _free_energy(v, L, M, s2, 0.0, xubar), lower, upper)
