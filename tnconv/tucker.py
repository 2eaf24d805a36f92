"""Tucker-2 decompositions of Conv2d kernels: a core on the spatial legs, a matrix per channel leg.

The kernel ``W[out, in, kh, kw]`` is written as::

    W[o, i, h, w] = sum_{a, b} U_out[o, a] * G[a, b, h, w] * U_in[i, b]

with ranks ``a < r_out``, ``b < r_in`` (the labelled network ``out - r_out - core - r_in - in``).
:func:`to_tucker` finds the factors by a truncated HOSVD of the ``out`` and ``in`` legs (the
left singular vectors of each unfolding, :func:`tnconv.decomp.left_singular`, in float64),
refined by HOOI (higher-order orthogonal iteration: each leg's factor in turn becomes the leading
left singular vectors of the kernel projected on the other leg, :func:`hooi`), and returns a
:class:`KernelTucker`; the truncation criteria are those of :class:`tnconv.decomp.Criteria`,
applied per leg to the HOSVD spectra. :func:`tucker2` returns the bare factors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from typing_extensions import Unpack

from .decomp import (
    Criteria,
    CriteriaOptions,
    check_positive_int,
    check_ratio,
    frobenius_norm,
    left_singular,
)
from .factors import KernelFactors, check_conv2d_kernel
from .network import compute_dtype

__all__ = ["DEFAULT_HOOI_ITERS", "KernelTucker", "to_tucker", "tucker2"]

#: HOOI sweeps of :func:`to_tucker` by default (it stops earlier at ``tol``).
DEFAULT_HOOI_ITERS = 50


class KernelTucker(KernelFactors):
    """A Conv2d kernel as a Tucker-2 network (returned by :func:`to_tucker`).

    Attributes
    ----------
    u_out, core, u_in : torch.Tensor
        ``[out, r_out]``, ``[r_out, r_in, kh, kw]``, ``[in, r_in]``; ``u_out`` and ``u_in``
        have orthonormal columns.
    ranks, full_ranks : tuple of int
        ``(r_out, r_in)`` kept, and the ranks of the two unfoldings before truncation.
    leg_spectra : tuple of torch.Tensor
        Singular values of the ``out`` and ``in`` unfoldings, before truncation.
    hooi_errors : list of float
        Relative error of the HOSVD start, then after each HOOI sweep (float64, from the core's
        norm); ``len(hooi_errors) - 1`` sweeps were done. The factors kept are the best of them.
    rel_error, error_bound, shape, factors
        See :class:`KernelFactors`.
    """

    kind = "tucker"
    inds = (("out", "r_out"), ("r_out", "r_in", "kh", "kw"), ("in", "r_in"))

    def __init__(self, factors: Sequence[torch.Tensor], kernel: torch.Tensor,
                 leg_spectra: tuple[torch.Tensor, torch.Tensor],
                 error_bound: float | None = None,
                 hooi_errors: list[float] | None = None) -> None:
        super().__init__(factors, kernel, error_bound)
        self.leg_spectra = leg_spectra
        self.hooi_errors: list[float] = [self.rel_error] if hooi_errors is None else hooi_errors

    @property
    def n_iter(self) -> int:
        """HOOI sweeps done after the HOSVD start."""
        return len(self.hooi_errors) - 1

    @property
    def u_out(self) -> torch.Tensor:
        """``[out, r_out]``."""
        return self.factors[0]

    @property
    def core(self) -> torch.Tensor:
        """``[r_out, r_in, kh, kw]``."""
        return self.factors[1]

    @property
    def u_in(self) -> torch.Tensor:
        """``[in, r_in]``."""
        return self.factors[2]

    @property
    def ranks(self) -> tuple[int, int]:
        """``(r_out, r_in)``."""
        return int(self.core.shape[0]), int(self.core.shape[1])

    @property
    def full_ranks(self) -> tuple[int, int]:
        """Ranks of the ``out`` and ``in`` unfoldings' spectra (before truncation)."""
        return int(self.leg_spectra[0].numel()), int(self.leg_spectra[1].numel())

    def _ranks(self) -> dict[str, Any]:
        return {"ranks": self.ranks, "full_ranks": self.full_ranks}

    def summary(self) -> dict[str, Any]:
        """As :meth:`KernelFactors.summary`, with ``n_iter`` (HOOI sweeps done)."""
        return {**super().summary(), "n_iter": self.n_iter}


def _tucker_params(shape: Sequence[int], r_out: int, r_in: int) -> int:
    o, i, kh, kw = shape
    return o * r_out + r_out * r_in * kh * kw + i * r_in


def _ranks_for_ratio(shape: Sequence[int], full: tuple[int, int], ratio: float) -> list[int]:
    """Largest ranks, in the proportion of the full ranks, within ``dense / ratio`` params."""
    budget = math.prod(shape) / ratio
    lo, hi = 0.0, 1.0
    for _ in range(50):
        f = (lo + hi) / 2
        r = (max(1, math.ceil(f * full[0])), max(1, math.ceil(f * full[1])))
        if _tucker_params(shape, *r) <= budget:
            lo = f
        else:
            hi = f
    return [max(1, math.ceil(lo * full[0])), max(1, math.ceil(lo * full[1]))]


def _check_ranks(ranks: object) -> tuple[int, int] | None:
    if ranks is None:
        return None
    pair = (ranks, ranks) if isinstance(ranks, int) else ranks
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"ranks must be an int or (r_out, r_in), got {ranks!r}")
    return check_positive_int("r_out", pair[0]), check_positive_int("r_in", pair[1])


def _choose_ranks(shape: Sequence[int], spectra: Sequence[torch.Tensor], criteria: Criteria,
                  caps: tuple[int, int] | None, ratio: float | None, norm: float) -> list[int]:
    """``(r_out, r_in)``: the smallest rank any of ranks, criteria and ratio allow, per leg."""
    full = (int(spectra[0].numel()), int(spectra[1].numel()))
    r = list(full) if caps is None else [min(f, c) for f, c in zip(full, caps, strict=True)]
    if criteria.active:
        if criteria.max_error is not None:  # HOSVD: the two legs' squared errors add up
            criteria = criteria.replace(max_error=criteria.max_error / math.sqrt(2))
        r = [min(rk, criteria.rank(s, norm=norm)) for rk, s in zip(r, spectra, strict=True)]
    if ratio is not None:
        r = [min(a, b) for a, b in zip(r, _ranks_for_ratio(shape, full, ratio), strict=True)]
    return r


def _check_hooi(n_iter: object, tol: object) -> tuple[int, float]:
    if isinstance(n_iter, bool) or not isinstance(n_iter, int):
        raise TypeError(f"n_iter must be an int >= 0 (HOOI sweeps), got {n_iter!r}")
    if n_iter < 0:
        raise ValueError(f"n_iter must be an int >= 0 (HOOI sweeps), got {n_iter}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)):
        raise TypeError(f"tol must be a finite number >= 0, got {tol!r}")
    if not math.isfinite(tol) or tol < 0:
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    return n_iter, float(tol)


def _leading(m: torch.Tensor, rank: int, previous: torch.Tensor) -> torch.Tensor:
    """``rank`` leading left singular vectors of ``m``, completed from ``previous`` if short."""
    u = left_singular(m)[0][:, :rank]
    if u.shape[1] < rank:  # m has fewer columns than rank: any orthonormal completion is optimal
        u = torch.linalg.qr(torch.cat([u, previous], 1))[0][:, :rank]
    return u


def _hooi(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, n_iter: int,
          tol: float) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """HOOI sweeps on the ``out`` and ``in`` legs of ``w`` (float64) from the factors ``a, b``.

    Returns the best factors seen (the start included) and the relative error of the start and
    after every sweep, ``sqrt(1 - ||core||^2 / ||w||^2)`` (the factors are orthonormal). Stops
    when a sweep changes the error by less than ``tol`` times the error before it.
    """
    o, i, kh, kw = w.shape
    top = float(w.abs().max()) if w.numel() else 0.0
    if top == 0.0:
        return a, b, [0.0]
    w = w / top  # no overflow in the squares
    norm2 = float(w.square().sum())

    def error(a: torch.Tensor, b: torch.Tensor) -> float:
        kept = float(torch.einsum("oihw,oa,ib->abhw", w, a, b).square().sum())
        return math.sqrt(max(norm2 - kept, 0.0) / norm2)

    errors = [error(a, b)]
    best = (errors[0], a, b)
    r_out, r_in = a.shape[1], b.shape[1]
    # a full rank on either leg, or a 1x1 kernel (a matrix): the HOSVD is already optimal
    if r_out >= min(o, i * kh * kw) or r_in >= min(i, o * kh * kw) or kh * kw == 1:
        return a, b, errors
    for _ in range(n_iter):
        a = _leading(torch.einsum("oihw,ib->obhw", w, b).reshape(o, -1), r_out, a)
        b = _leading(torch.einsum("oihw,oa->iahw", w, a).reshape(i, -1), r_in, b)
        errors.append(error(a, b))
        if errors[-1] < best[0]:
            best = (errors[-1], a, b)
        if abs(errors[-2] - errors[-1]) <= tol * errors[-2]:
            break
    return best[1], best[2], errors


def to_tucker(
    kernel: torch.Tensor,
    *,
    ranks: int | tuple[int, int] | None = None,
    ratio: float | None = None,
    n_iter: int = DEFAULT_HOOI_ITERS,
    tol: float = 1e-6,
    **criteria: Unpack[CriteriaOptions],
) -> KernelTucker:
    """Tucker-2 decomposition of a Conv2d kernel: truncated HOSVD of its channel legs, then HOOI.

    Parameters
    ----------
    kernel
        ``[out, in, kh, kw]`` (not modified; a grouped kernel ``[out, in/groups, kh, kw]`` is
        factored as it is).
    ranks
        ``(r_out, r_in)`` or one int for both; capped at the legs' full ranks.
    max_bond, keep, cutoff, cutoff_mode
        Per-leg criteria on the spectrum of each channel leg (:class:`tnconv.decomp.Criteria`);
        the smallest rank any of them gives is kept.
    max_error
        Bound on the relative error of the whole kernel: each leg discards at most
        ``max_error / sqrt(2)`` (the HOSVD bound then gives ``||W - W_t|| <= max_error ||W||``).
    ratio
        Target compression ``dense / factored`` parameters (> 1): the largest ranks
        (proportional to the full ranks) within that budget.
    n_iter
        At most this many HOOI sweeps after the HOSVD start (0: the plain HOSVD). Each sweep
        replaces ``U_out`` by the leading left singular vectors of the ``out`` unfolding of
        ``W x_in U_in^T``, then ``U_in`` likewise; the error never rises above the HOSVD's
        (the best factors are kept). Skipped where the HOSVD is optimal already (a full rank on
        either leg, a 1x1 kernel).
    tol
        Stop when a sweep changes the relative error by less than ``tol`` times that error.

    Returns
    -------
    KernelTucker
        The factors in the kernel's dtype and device (computed in float64), the leg spectra,
        the HOOI errors, parameter counts and the measured error. With no criterion the
        decomposition is exact.

    Raises
    ------
    TypeError, ValueError
        A kernel that is not a finite floating 4-D tensor; bad ranks, criteria, ratio,
        ``n_iter`` or ``tol``.

    Examples
    --------
    >>> import torch
    >>> w = torch.randn(16, 8, 3, 3)
    >>> t = to_tucker(w, ranks=(4, 3))
    >>> t.ranks, t.num_params, t.rel_error <= to_tucker(w, ranks=(4, 3), n_iter=0).rel_error
    ((4, 3), 196, True)
    """
    check_conv2d_kernel(kernel)
    crit = Criteria.from_options(criteria)
    caps, ratio = _check_ranks(ranks), check_ratio(ratio)
    n_iter, tol = _check_hooi(n_iter, tol)
    with torch.no_grad():
        w = kernel.detach().to(torch.float64)
        (u_out, s_out), (u_in, s_in) = (
            left_singular(w.movedim(axis, 0).reshape(w.shape[axis], -1)) for axis in (0, 1))
        r = _choose_ranks(w.shape, (s_out, s_in), crit, caps, ratio, frobenius_norm(w))
        a, b, errors = _hooi(w, u_out[:, : r[0]], u_in[:, : r[1]], n_iter, tol)
        core = torch.einsum("oihw,oa,ib->abhw", w, a, b)
    factors = [t.to(kernel).contiguous().clone() for t in (a, core, b)]
    spectra = (s_out.to(compute_dtype(kernel)), s_in.to(compute_dtype(kernel)))
    return KernelTucker(factors, kernel, spectra, crit.max_error, errors)


def tucker2(
    kernel: torch.Tensor, **options: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The factors ``(U_out, core, U_in)`` of :func:`to_tucker` (same keyword options, HOOI
    included).

    Returns
    -------
    (U_out, core, U_in)
        ``[out, r_out]``, ``[r_out, r_in, kh, kw]``, ``[in, r_in]`` in the kernel's dtype and
        device (computed in float64). With no criterion the decomposition is exact.

    Examples
    --------
    >>> import torch
    >>> u, g, v = tucker2(torch.randn(8, 6, 3, 3), ranks=(4, 3))
    >>> tuple(u.shape), tuple(g.shape), tuple(v.shape)
    ((8, 4), (4, 3, 3, 3), (6, 3))
    """
    t = to_tucker(kernel, **options)
    return t.u_out, t.core, t.u_in
