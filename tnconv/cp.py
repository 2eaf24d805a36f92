"""CP (canonical polyadic) decompositions, fitted by alternating least squares in torch.

A Conv2d kernel as a sum of ``R`` rank-one terms::

    W[o, i, h, w] = sum_r A[o, r] * B[i, r] * C[h, r] * D[w, r]

All four legs share the one CP index ``r`` (a hyper-edge; opt_einsum contracts it directly).
CP has no SVD-like truncation: a rank-``R`` fit is found by ALS (:func:`cp_als`, any tensor),
in float64 on the tensor's device, from the leading left singular vectors of each unfolding
(:func:`tnconv.decomp.left_singular`) and fixed-seed random columns beyond them, so it is
reproducible; each sweep is followed by a line search (Bro's extrapolation, kept only where it
lowers the error), and optional extra random starts keep the best fit. :func:`to_cp` chooses
``R`` (from ``rank``, ``max_bond``, ``ratio`` or ``max_error``) and returns a :class:`KernelCP`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch

from .decomp import check_max_error, check_positive_int, check_ratio, left_singular
from .factors import KernelFactors, check_conv2d_kernel

__all__ = ["KernelCP", "to_cp", "cp_als", "DEFAULT_CP_RATIO", "DEFAULT_CP_ITERS"]

_MAX_DIM = 7

#: Compression ``dense / factored`` that sets the CP rank when no criterion is given.
DEFAULT_CP_RATIO = 4.0

#: Maximum ALS sweeps per start by default (the fit usually stops earlier at ``tol``).
DEFAULT_CP_ITERS = 300


def _khatri_rao(factors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Column-wise Kronecker product, rows in C order (the last factor's index fastest)."""
    out = factors[0]
    for f in factors[1:]:
        out = (out[:, None, :] * f[None, :, :]).reshape(-1, f.shape[1])
    return out




def _half_mttkrp(y: torch.Tensor, factors: Sequence[torch.Tensor], mode: int) -> torch.Tensor:
    """MTTKRP of ``y [I_0, .., I_k-1, R]`` (the tensor already contracted with the other
    half's factors, ``R`` batched) for ``mode`` of this half: ``[I_mode, R]``."""
    others = [f for m, f in enumerate(factors) if m != mode]
    if not others:
        return y
    yn = y.movedim(mode, 0).reshape(y.shape[mode], -1, y.shape[-1])
    return (yn * _khatri_rao(others)[None]).sum(1)


def _check_number(name: str, value: object, *, positive: bool = False) -> float:
    allowed = "a finite number > 0" if positive else "a finite number >= 0"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {allowed}, got {value!r}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return float(value)


def _check_als(tensor: object, rank: object, n_iter: object, tol: object, n_starts: object,
               max_time: object) -> None:
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        raise TypeError(f"tensor must be a floating-point torch.Tensor, got "
                        f"{getattr(tensor, 'dtype', type(tensor).__name__)}")
    if not 2 <= tensor.dim() <= _MAX_DIM:
        raise ValueError(f"tensor must have 2 to {_MAX_DIM} dimensions, "
                         f"got shape {tuple(tensor.shape)}")
    check_positive_int("rank", rank)
    check_positive_int("n_iter", n_iter)
    check_positive_int("n_starts", n_starts)
    _check_number("tol", tol)
    if max_time is not None:
        _check_number("max_time", max_time, positive=True)


def _als_start(x: torch.Tensor, rank: int, seed: int) -> list[torch.Tensor]:
    """Leading left singular vectors of each unfolding, random columns beyond them."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    factors = []
    for mode in range(x.dim()):
        u = left_singular(x.movedim(mode, 0).reshape(x.shape[mode], -1))[0][:, :rank]
        if u.shape[1] < rank:
            extra = torch.randn(x.shape[mode], rank - u.shape[1], generator=gen,
                                dtype=torch.float64).to(x.device)
            u = torch.cat([u, extra / math.sqrt(x.shape[mode])], 1)
        factors.append(u)
    return factors


def _random_start(x: torch.Tensor, rank: int, seed: int) -> list[torch.Tensor]:
    """Gaussian factors (fixed seed) scaled so that the start has the tensor's norm."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    factors = [torch.randn(n, rank, generator=gen, dtype=torch.float64).to(x.device)
               for n in x.shape]
    scale = (float(x.norm()) / max(_cp_norm2(factors), 1e-300) ** 0.5) ** (1 / x.dim())
    return [f * scale for f in factors]


def _grams(factors: list[torch.Tensor]) -> list[torch.Tensor]:
    return [f.T @ f for f in factors]


def _cp_norm2(factors: list[torch.Tensor]) -> float:
    """``||[[factors]]||^2`` from the Hadamard product of the Gram matrices."""
    v = torch.ones_like(factors[0][:1].T @ factors[0][:1])
    for g in _grams(factors):
        v = v * g
    return float(v.sum())


def _rel_error(xm: torch.Tensor, factors: list[torch.Tensor], norm2: float) -> float:
    """Relative error of ``factors`` against ``xm``, the tensor as a ``[P, Q]`` matrix split
    at the first ``len(factors) // 2`` axes."""
    k = len(factors) // 2
    inner = float(((xm @ _khatri_rao(factors[k:])) * _khatri_rao(factors[:k])).sum())
    return math.sqrt(max(norm2 - 2 * inner + _cp_norm2(factors), 0.0) / norm2)


def _sweep(xm: torch.Tensor, shape: Sequence[int], factors: list[torch.Tensor],
           norm2: float, damping: float) -> float:
    """One ALS sweep, in place; the relative error after it (from norms, no reconstruction).

    Each solve adds ``damping`` times the diagonal of the normal matrix to it (Tikhonov).

    The tensor ``xm`` is a ``[P, Q]`` matrix split at the first ``k = ndim // 2`` axes: one
    matrix product with the Khatri-Rao product of the last axes' factors serves the MTTKRPs
    of the first ``k`` axes, one with the first axes' factors those of the others.
    """
    n, k, rank = len(shape), len(shape) // 2, factors[0].shape[1]
    grams = _grams(factors)
    for mode in range(n):
        if mode == 0:
            half = (xm @ _khatri_rao(factors[k:])).reshape(*shape[:k], rank)
        elif mode == k:
            half = (_khatri_rao(factors[:k]).T @ xm).T.reshape(*shape[k:], rank)
        v = torch.ones_like(grams[0])
        for m, g in enumerate(grams):
            if m != mode:
                v = v * g
        lo = 0 if mode < k else k
        mk = _half_mttkrp(half, factors[lo:k if mode < k else n], mode - lo)
        damped = v + torch.diag_embed(v.diagonal() * damping) if damping else v
        factors[mode] = mk @ torch.linalg.pinv(damped, hermitian=True)
        grams[mode] = factors[mode].T @ factors[mode]
    inner = float((mk * factors[-1]).sum())
    rec2 = float((v * grams[-1]).sum())
    return math.sqrt(max(norm2 - 2 * inner + rec2, 0.0) / norm2)


def _run_als(x: torch.Tensor, factors: list[torch.Tensor], n_iter: int, tol: float,
             line_search: bool, ridge: float,
             deadline: float) -> tuple[list[torch.Tensor], list[float]]:
    """ALS sweeps from ``factors``, each solve damped by ``ridge`` times the last error.
    With ``line_search`` each sweep is followed by Bro's
    extrapolation ``F_prev + k**(1/p) (F - F_prev)``, kept only where it lowers the error (``p``
    grows after 4 failures). Stops after ``n_iter`` sweeps, at a relative change of the error
    below ``tol``, or at ``deadline`` (``time.monotonic()``)."""
    norm2 = float((x * x).sum())
    xm = x.reshape(math.prod(x.shape[: x.dim() // 2]), -1)
    errors: list[float] = []
    power, fails = 2.0, 0
    for k in range(1, n_iter + 1):
        previous = list(factors)
        damping = ridge * (errors[-1] if errors else 1.0)
        errors.append(_sweep(xm, x.shape, factors, norm2, damping))
        if line_search and k > 2:
            jump = k ** (1.0 / power)
            trial = [p + jump * (f - p) for p, f in zip(previous, factors, strict=True)]
            err = _rel_error(xm, trial, norm2)
            if err < errors[-1]:
                factors[:], errors[-1], fails = trial, err, 0
            else:
                fails += 1
                if fails == 4:
                    power, fails = power + 1.0, 0
        if len(errors) > 1 and abs(errors[-2] - errors[-1]) <= tol * errors[-2]:
            break
        if time.monotonic() > deadline:
            break
    return factors, errors


def _balance(factors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Give every factor's column ``r`` the same norm (their geometric mean)."""
    norms = torch.stack([f.norm(dim=0) for f in factors])  # [ndim, R]
    target = norms.clamp_min(1e-300).log().mean(0).exp()
    return [f * torch.where(n > 0, target / n.clamp_min(1e-300), torch.ones_like(n))
            for f, n in zip(factors, norms, strict=True)]


def cp_als(
    tensor: torch.Tensor,
    rank: int,
    *,
    n_iter: int = DEFAULT_CP_ITERS,
    tol: float = 1e-8,
    seed: int = 0,
    n_starts: int = 3,
    line_search: bool = True,
    ridge: float = 0.0,
    max_time: float | None = None,
) -> tuple[list[torch.Tensor], list[float]]:
    """Rank-``rank`` CP decomposition by alternating least squares with line search.

    Parameters
    ----------
    tensor
        Any real tensor of 2 to 7 dimensions (not modified); the fit runs in float64 on its
        device.
    rank
        Number of rank-one terms.
    n_iter
        Maximum number of ALS sweeps per start (each updates every factor once).
    tol
        Stop when a sweep changes the relative error by less than ``tol`` times that error.
    seed
        Seed of the random columns used when ``rank`` exceeds a leg's size (the first start
        is otherwise the leading singular vectors of each unfolding), and of the random starts.
    n_starts
        Starts to fit, the best fit is kept: the SVD start, then ``n_starts - 1`` more (the SVD
        start with other random columns where ``rank`` exceeds a leg's size, else Gaussian).
    line_search
        Extrapolate the factors after each sweep (Bro's rule, kept only where the error drops);
        ``False`` gives plain ALS.
    ridge
        Damping of each least-squares solve: ``ridge`` times the current relative error, times
        the diagonal of the normal matrix, is added to it (Tikhonov). The best undamped fits of
        a generic kernel tend to be degenerate (large rank-one terms that cancel, on which SGD
        diverges); a small ``ridge`` (``5e-3``, :class:`tnconv.CPConv2d`'s default) keeps the
        terms small at a slightly larger error, and vanishes as the fit becomes exact.
    max_time
        Seconds after which no new sweep starts (None: no limit). Where it binds, the result
        depends on the machine's speed.

    Returns
    -------
    factors : list of torch.Tensor
        One ``[size_n, rank]`` matrix per axis, in the tensor's dtype, with balanced column
        norms across the factors.
    errors : list of float
        Relative Frobenius error ``||X - X_cp|| / ||X||`` after each sweep of the start kept
        (the last is that of the factors returned).

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> a, b, c = (torch.randn(n, 2, generator=g, dtype=torch.float64) for n in (5, 4, 3))
    >>> x = torch.einsum("ir,jr,kr->ijk", a, b, c)
    >>> factors, errors = cp_als(x, 2, n_iter=200, tol=1e-14)
    >>> errors[-1] < 1e-6
    True
    """
    _check_als(tensor, rank, n_iter, tol, n_starts, max_time)
    ridge = _check_number("ridge", ridge)
    deadline = math.inf if max_time is None else time.monotonic() + max_time
    with torch.no_grad():
        x = tensor.detach().to(torch.float64)
        if float((x * x).sum()) == 0.0:
            return [f.zero_().to(tensor) for f in _als_start(x, rank, seed)], [0.0]
        best: tuple[list[torch.Tensor], list[float]] | None = None
        for start in range(n_starts):
            # more starts: other random columns where the SVD start has some, else Gaussian
            init = (_als_start(x, rank, seed + start) if start == 0 or rank > min(x.shape)
                    else _random_start(x, rank, seed + start))
            fit = _run_als(x, init, n_iter, tol, line_search, ridge, deadline)
            if best is None or fit[1][-1] < best[1][-1]:
                best = fit
            if time.monotonic() > deadline:
                break
        factors, errors = best  # type: ignore[misc]
        factors = _balance(factors)
    return [f.to(tensor).contiguous() for f in factors], errors


class KernelCP(KernelFactors):
    """A Conv2d kernel as a rank-``R`` CP decomposition (returned by :func:`to_cp`).

    Attributes
    ----------
    a, b, c, d : torch.Tensor
        Factors of the ``out``, ``in``, ``kh`` and ``kw`` legs, each ``[size, R]``.
    rank : int
        ``R``.
    als_errors : list of float
        Relative error of the fit after each ALS sweep (computed in float64).
    rel_error, error_bound, shape, factors
        See :class:`tnconv.factors.KernelFactors`; ``error_bound`` is the ``max_error`` asked
        for (the fit may stop short of it at the largest rank allowed).
    """

    kind = "cp"
    inds = (("out", "r"), ("in", "r"), ("kh", "r"), ("kw", "r"))

    def __init__(self, factors: Sequence[torch.Tensor], kernel: torch.Tensor,
                 als_errors: list[float], error_bound: float | None = None) -> None:
        super().__init__(factors, kernel, error_bound)
        self.als_errors = als_errors

    a = property(lambda self: self.factors[0], doc="``[out, R]``.")
    b = property(lambda self: self.factors[1], doc="``[in, R]``.")
    c = property(lambda self: self.factors[2], doc="``[kh, R]``.")
    d = property(lambda self: self.factors[3], doc="``[kw, R]``.")

    @property
    def rank(self) -> int:
        """The CP rank ``R``."""
        return int(self.factors[0].shape[1])

    def _ranks(self) -> dict[str, Any]:
        return {"rank": self.rank}


def _rank_cap(shape: Sequence[int], rank: int | None, max_bond: int | None,
              ratio: float | None) -> int | None:
    """The largest ``R`` that ``rank``, ``max_bond`` and the budget ``dense / ratio`` allow."""
    caps = [c for c in (rank, max_bond) if c is not None]
    if ratio is not None:
        caps.append(max(1, int(math.prod(shape) / (ratio * sum(shape)))))
    return min(caps) if caps else None


def to_cp(
    kernel: torch.Tensor,
    rank: int | None = None,
    *,
    max_bond: int | None = None,
    max_error: float | None = None,
    ratio: float | None = None,
    n_iter: int = DEFAULT_CP_ITERS,
    tol: float = 1e-8,
    seed: int = 0,
    n_starts: int = 3,
    line_search: bool = True,
    ridge: float = 0.0,
    max_time: float | None = None,
) -> KernelCP:
    """Fit a rank-``R`` CP decomposition to a Conv2d kernel by ALS.

    Parameters
    ----------
    kernel
        ``[out, in, kh, kw]`` (not modified).
    rank
        Number of rank-one terms ``R``.
    max_bond
        Upper bound on ``R`` (the vocabulary shared with the MPS and Tucker decompositions).
    max_error
        Smallest ``R`` in ``1, 2, 4, ...`` whose ALS fit reaches this relative error, up to the
        rank the other options allow (or, with none, the rank with as many parameters as the
        dense kernel).
    ratio
        ``R`` from a parameter budget ``dense / ratio`` (ratio > 1):
        ``R = dense / (ratio * (out + in + kh + kw))``. When ``rank``, ``max_bond``,
        ``max_error`` and ``ratio`` are all None, ``ratio=4`` (:data:`DEFAULT_CP_RATIO`).
    n_iter, tol, seed, n_starts, line_search, ridge, max_time
        ALS controls (see :func:`cp_als`); ``max_time`` applies to each fit.

    Returns
    -------
    KernelCP
        The factors in the kernel's dtype and device, the ALS errors, parameter counts and the
        measured error.

    Raises
    ------
    TypeError, ValueError
        A kernel that is not a finite floating 4-D tensor; bad rank, criteria or ALS controls.

    Examples
    --------
    >>> import torch
    >>> cp = to_cp(torch.randn(8, 8, 3, 3), ratio=2.0)
    >>> cp.rank, cp.num_params  # 8*8*3*3 / (2 * (8 + 8 + 3 + 3)) = 13.1
    (13, 286)
    """
    check_conv2d_kernel(kernel)
    for name, value in (("rank", rank), ("max_bond", max_bond)):
        if value is not None:
            check_positive_int(name, value)
    ratio = check_ratio(ratio)
    if max_error is not None:
        check_max_error(max_error)
    elif rank is None and max_bond is None and ratio is None:
        ratio = DEFAULT_CP_RATIO
    shape = tuple(kernel.shape)
    cap = _rank_cap(shape, rank, max_bond, ratio)
    w = kernel.detach()
    als = {"n_iter": n_iter, "tol": tol, "seed": seed, "n_starts": n_starts,
           "line_search": line_search, "ridge": ridge, "max_time": max_time}
    if max_error is None:
        factors, errors = cp_als(w, cap, **als)  # type: ignore[arg-type]
        return KernelCP(factors, kernel, errors)
    limit = max(1, math.prod(shape) // sum(shape)) if cap is None else cap
    r = 1
    while True:
        factors, errors = cp_als(w, r, **als)  # type: ignore[arg-type]
        if errors[-1] <= max_error or r >= limit:
            return KernelCP(factors, kernel, errors, max_error)
        r = min(2 * r, limit)
