"""CP (canonical polyadic) decompositions, fitted by alternating least squares in torch.

A Conv2d kernel as a sum of ``R`` rank-one terms::

    W[o, i, h, w] = sum_r A[o, r] * B[i, r] * C[h, r] * D[w, r]

All four legs share the one CP index ``r`` (a hyper-edge; opt_einsum contracts it directly).
CP has no SVD-like truncation: a rank-``R`` fit is found by ALS (:func:`cp_als`, any tensor),
in float64 on the tensor's device, from the leading left singular vectors of each unfolding
(:func:`tnconv.decomp.left_singular`) and fixed-seed random columns beyond them, so it is
reproducible. :func:`to_cp` chooses ``R`` (from ``rank``, ``max_bond``, ``ratio`` or
``max_error``) and returns a :class:`KernelCP`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .decomp import check_max_error, check_positive_int, check_ratio, left_singular
from .factors import KernelFactors, check_conv2d_kernel

__all__ = ["KernelCP", "to_cp", "cp_als", "DEFAULT_CP_RATIO"]

_LETTERS = "abcdefgh"

#: Compression ``dense / factored`` that sets the CP rank when no criterion is given.
DEFAULT_CP_RATIO = 4.0


def _mttkrp(x: torch.Tensor, factors: list[torch.Tensor], mode: int) -> torch.Tensor:
    """``X_(mode) @ khatri_rao(other factors)`` as one einsum, ``[I_mode, R]``."""
    n = x.dim()
    others = [m for m in range(n) if m != mode]
    eq = (_LETTERS[:n] + "," + ",".join(f"{_LETTERS[m]}z" for m in others)
          + f"->{_LETTERS[mode]}z")
    return torch.einsum(eq, x, *(factors[m] for m in others))


def _check_als(tensor: object, rank: object, n_iter: object, tol: object) -> None:
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        raise TypeError(f"tensor must be a floating-point torch.Tensor, got "
                        f"{getattr(tensor, 'dtype', type(tensor).__name__)}")
    if not 2 <= tensor.dim() <= len(_LETTERS) - 1:
        raise ValueError(f"tensor must have 2 to {len(_LETTERS) - 1} dimensions, "
                         f"got shape {tuple(tensor.shape)}")
    check_positive_int("rank", rank)
    check_positive_int("n_iter", n_iter)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)):
        raise TypeError(f"tol must be a finite number >= 0, got {tol!r}")
    if not math.isfinite(tol) or tol < 0:
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")


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
    n_iter: int = 50,
    tol: float = 1e-7,
    seed: int = 0,
) -> tuple[list[torch.Tensor], list[float]]:
    """Rank-``rank`` CP decomposition by alternating least squares.

    Parameters
    ----------
    tensor
        Any real tensor of 2 to 7 dimensions (not modified); the fit runs in float64 on its
        device.
    rank
        Number of rank-one terms.
    n_iter
        Maximum number of ALS sweeps (each updates every factor once).
    tol
        Stop when the relative error changes by less than this between sweeps.
    seed
        Seed of the random columns used when ``rank`` exceeds a leg's size (the start is
        otherwise the leading singular vectors of each unfolding).

    Returns
    -------
    factors : list of torch.Tensor
        One ``[size_n, rank]`` matrix per axis, in the tensor's dtype, with balanced column
        norms across the factors.
    errors : list of float
        Relative Frobenius error ``||X - X_cp|| / ||X||`` after each sweep.

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
    _check_als(tensor, rank, n_iter, tol)
    with torch.no_grad():
        x = tensor.detach().to(torch.float64)
        factors = _als_start(x, rank, seed)
        norm2 = float((x * x).sum())
        errors: list[float] = []
        if norm2 == 0.0:
            return [f.zero_().to(tensor) for f in factors], [0.0]
        for _ in range(n_iter):
            for mode in range(x.dim()):
                v = torch.ones(rank, rank, dtype=torch.float64, device=x.device)
                for m in range(x.dim()):
                    if m != mode:
                        v = v * (factors[m].T @ factors[m])
                mk = _mttkrp(x, factors, mode)
                factors[mode] = mk @ torch.linalg.pinv(v, hermitian=True)
            inner = float((mk * factors[mode]).sum())
            rec2 = float((v * (factors[mode].T @ factors[mode])).sum())
            errors.append(math.sqrt(max(norm2 - 2 * inner + rec2, 0.0) / norm2))
            if len(errors) > 1 and abs(errors[-2] - errors[-1]) < tol:
                break
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
    n_iter: int = 50,
    tol: float = 1e-7,
    seed: int = 0,
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
    n_iter, tol, seed
        ALS controls (see :func:`cp_als`).

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
    if max_error is None:
        factors, errors = cp_als(w, cap, n_iter=n_iter, tol=tol, seed=seed)  # type: ignore[arg-type]
        return KernelCP(factors, kernel, errors)
    limit = max(1, math.prod(shape) // sum(shape)) if cap is None else cap
    r = 1
    while True:
        factors, errors = cp_als(w, r, n_iter=n_iter, tol=tol, seed=seed)
        if errors[-1] <= max_error or r >= limit:
            return KernelCP(factors, kernel, errors, max_error)
        r = min(2 * r, limit)
