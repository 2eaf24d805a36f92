"""Variational (ALS) sweeps over an MPS chain at fixed bond dimensions, array level.

Cores are ``(r_{k-1}, d_k, r_k)`` tensors (``r_{-1} = r_{n-1} = 1``) approximating a dense
tensor ``a`` of shape ``(d_0, ..., d_{n-1})``. With every core but one orthonormal (left of it
left-orthonormal, right of it right-orthonormal), the best core ``k`` is the projection of
``a`` onto the environment, so each update is optimal given the others and the error cannot
increase (one-site ALS). A sweep visits every site once, alternating direction (the first one
right to left, from a left-canonical chain such as the TT-SVD's). The error after every sweep
is measured on the dense tensor, in float64; the best chain is kept.

Also the chain helpers shared with :mod:`tnconv.mps.ranks`: :func:`chain_dense`,
:func:`chain_params`, :func:`tail_squares`, :func:`cut_spectra`, and the canonical forms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..decomp import svdvals

__all__ = ["als_sweeps", "canonical_minimal", "chain_dense", "chain_params", "cut_spectra",
           "left_canonical", "tail_squares"]


def chain_params(dims: Sequence[int], ranks: Sequence[int]) -> int:
    """Number of entries of the site tensors ``(r_{k-1}, d_k, r_k)``.

    Examples
    --------
    >>> chain_params([4, 3, 2], [2, 2])  # 1*4*2 + 2*3*2 + 2*2*1
    24
    """
    full = [1, *ranks, 1]
    return sum(full[k] * d * full[k + 1] for k, d in enumerate(dims))


def tail_squares(s: torch.Tensor) -> list[float]:
    """``t[r] = sum(s[r:] ** 2)`` for ``r = 0 .. len(s)``, in float64 (the last one 0).

    Examples
    --------
    >>> tail_squares(torch.tensor([2.0, 1.0]))
    [5.0, 1.0, 0.0]
    """
    tails, acc = [0.0], 0.0
    for x in reversed(s.tolist()):  # a plain loop: the same sums as a flipped cumsum
        acc += x * x
        tails.append(acc)
    tails.reverse()
    return tails


def cut_spectra(a: torch.Tensor) -> list[torch.Tensor]:
    """Singular values of every unfolding ``a[:k+1] | a[k+1:]`` of a chain-ordered tensor.

    Examples
    --------
    >>> [s.numel() for s in cut_spectra(torch.randn(2, 3, 4))]
    [2, 4]
    """
    dims = a.shape
    a = a.detach()
    return [svdvals(a.reshape(math.prod(dims[: k + 1]), -1)) for k in range(len(dims) - 1)]


def chain_dense(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """Contract cores ``(r_{k-1}, d_k, r_k)`` to the dense tensor ``(d_0, ..., d_{n-1})``.

    Examples
    --------
    >>> cores = [torch.ones(1, 2, 3), torch.ones(3, 4, 1)]
    >>> chain_dense(cores).shape
    torch.Size([2, 4])
    """
    out = cores[0].reshape(-1, cores[0].shape[-1])
    for c in cores[1:]:
        out = (out @ c.reshape(c.shape[0], -1)).reshape(-1, c.shape[-1])
    return out.reshape([c.shape[1] for c in cores])


def left_canonical(cores: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The same chain with every core but the last left-orthonormal (QR, left to right).

    Examples
    --------
    >>> cores = left_canonical([torch.randn(1, 4, 3, dtype=torch.float64),
    ...                         torch.randn(3, 5, 1, dtype=torch.float64)])
    >>> g = cores[0].reshape(4, 3)
    >>> bool(torch.allclose(g.T @ g, torch.eye(3, dtype=torch.float64)))
    True
    """
    cores = list(cores)
    for k in range(len(cores) - 1):
        r0, d, r1 = cores[k].shape
        q, r = torch.linalg.qr(cores[k].reshape(r0 * d, r1))
        cores[k] = q.reshape(r0, d, -1)
        nxt = cores[k + 1]
        cores[k + 1] = (r @ nxt.reshape(nxt.shape[0], -1)).reshape(r.shape[0], *nxt.shape[1:])
    return cores


def canonical_minimal(cores: Sequence[torch.Tensor], limit: float, *,
                      left_orthonormal: bool = False,
                      schmidt: Sequence[tuple[torch.Tensor, torch.Tensor] | None] | None = None
                      ) -> tuple[list[torch.Tensor], float]:
    """Minimal bonds, right-canonical: right to left, drop the bond directions whose Schmidt
    weight ``||tail||`` is at most ``limit`` (numerically zero).

    The chain is left-orthonormalised first (:func:`left_canonical`) unless
    ``left_orthonormal`` says its cores but the last already are (a TT-SVD's). ``schmidt``:
    per bond ``j``, ``(s, vh)`` where known (a suffix of the bonds, e.g. from
    :meth:`tnconv.mps.ranks.TTSVD.schmidt`), else None: the chain's Schmidt values at bond
    ``j`` and its right Schmidt vectors as the rows of ``vh``, shape ``(r_j, d_{j+1} ...
    d_{n-1})``; site ``j + 1`` is then ``vh_j`` projected on ``vh_{j+1}`` (no SVD). Returns
    the cores (all but the first right-orthonormal) and the squared weight dropped.

    Examples
    --------
    >>> u = torch.linalg.qr(torch.randn(4, 3, dtype=torch.float64))[0]
    >>> last = torch.zeros(3, 5, 1, dtype=torch.float64)
    >>> last[0] = 1.0  # one direction of the bond carries nothing
    >>> cores, dropped = canonical_minimal([u.reshape(1, 4, 3), last], 1e-12)
    >>> [tuple(c.shape) for c in cores], dropped
    ([(1, 4, 1), (1, 5, 1)], 0.0)
    """
    cores = list(cores) if left_orthonormal else left_canonical(cores)
    dropped, limit2 = 0.0, limit * limit
    right = None  # the right Schmidt vectors of the bond right of site k, where known
    for k in range(len(cores) - 1, 0, -1):
        r0, d, r1 = cores[k].shape
        known = None if schmidt is None else schmidt[k - 1]
        if known is not None and (right is not None or k == len(cores) - 1):
            (s, vh), uh = known, None  # as an SVD of site k: v = vh.mT, uh = identity
            r1 = 1 if right is None else right.shape[0]  # site k + 1 kept r1 directions
            core = vh if right is None else (vh.reshape(r0 * d, -1) @ right.mT).reshape(r0, -1)
        else:
            v, s, uh = torch.linalg.svd(cores[k].reshape(r0, d * r1).mT, full_matrices=False)
            vh = core = v.mT
        tails = tail_squares(s)
        keep = next(r for r in range(1, len(tails)) if tails[r] <= limit2)
        dropped += tails[keep]
        if keep < s.shape[0]:
            s, vh, core = s[:keep], vh[:keep], core[:keep]
            uh = None if uh is None else uh[:keep]
        right = vh if known is not None else None
        cores[k] = core.reshape(keep, d, r1)
        left = cores[k - 1]
        if right is not None and k > 1 and schmidt[k - 2] is not None:  # type: ignore[index]
            continue  # site k - 1 is a Schmidt site too: replaced as a whole
        if uh is None:
            cores[k - 1] = (left if keep == r0 else left[..., :keep]) * s
        else:
            cores[k - 1] = (left.reshape(-1, r0) @ (uh.mT * s)).reshape(*left.shape[:-1], keep)
    return cores, dropped


def _optimal_core(a: torch.Tensor, cores: list[torch.Tensor], k: int) -> torch.Tensor:
    """Projection of ``a`` onto the environment of site ``k`` (cores left of ``k``
    left-orthonormal, right of it right-orthonormal): the best core ``k``."""
    dims = [int(c.shape[1]) for c in cores]
    x = a.reshape(dims[0], -1)
    for j in range(k):  # contract the left cores: (r_{j-1} d_j, rest) -> (r_j, rest)
        g = cores[j].reshape(-1, cores[j].shape[-1])
        x = (g.mT @ x.reshape(g.shape[0], -1))
        x = x.reshape(g.shape[1] * dims[j + 1], -1) if j + 1 < len(dims) else x
    x = x.reshape(-1, 1)  # (..., d_{n-1}, r_{n-1} = 1) flattened
    for j in range(len(cores) - 1, k, -1):  # contract the right cores from the end
        g = cores[j].reshape(cores[j].shape[0], -1)
        x = x.reshape(-1, g.shape[1]) @ g.mT
    r_left = cores[k].shape[0]
    return x.reshape(r_left, dims[k], cores[k].shape[-1])


def _error(a: torch.Tensor, cores: Sequence[torch.Tensor], norm: float) -> float:
    diff = chain_dense(cores).double() - a.double()
    return float(diff.norm()) / norm if norm > 0 else float(diff.norm())


def _sweep(a: torch.Tensor, cores: list[torch.Tensor], backward: bool) -> None:
    """One pass over all sites, updating each and moving the orthogonality centre on."""
    n = len(cores)
    order = range(n - 1, -1, -1) if backward else range(n)
    for k in order:
        core = _optimal_core(a, cores, k)
        r0, d, r1 = core.shape
        if backward and k > 0:  # make site k right-orthonormal (rows of (r0, d r1))
            q, _ = torch.linalg.qr(core.reshape(r0, d * r1).mT)
            core = q.mT.reshape(r0, d, r1)
        elif not backward and k < n - 1:  # make site k left-orthonormal
            q, _ = torch.linalg.qr(core.reshape(r0 * d, r1))
            core = q.reshape(r0, d, r1)
        cores[k] = core


def als_sweeps(a: torch.Tensor, cores: Sequence[torch.Tensor],
               sweeps: int) -> tuple[list[torch.Tensor], list[float]]:
    """Refine a left-canonical chain by ``sweeps`` one-site ALS sweeps at fixed bond dims.

    Parameters
    ----------
    a
        The dense tensor, shape ``(d_0, ..., d_{n-1})``.
    cores
        Cores ``(r_{k-1}, d_k, r_k)``, all but the last left-orthonormal, with bond dimensions
        that are minimal (``r_k <= min(r_{k-1} d_k, d_{k+1} r_{k+1})``), e.g. a TT-SVD's.
    sweeps
        Number of sweeps (>= 0).

    Returns
    -------
    cores, errors
        The best chain found (left-canonical as given when no sweep improved it) and the
        relative error ``||a - chain|| / ||a||`` before sweeping and after every sweep, each
        the best so far (never increasing).

    Examples
    --------
    >>> a = torch.randn(4, 5, 6, dtype=torch.float64)
    >>> q, _ = torch.linalg.qr(torch.randn(4, 2, dtype=torch.float64))
    >>> c1 = torch.randn(2, 5, 3, dtype=torch.float64)
    >>> c1 = torch.linalg.qr(c1.reshape(10, 3))[0].reshape(2, 5, 3)
    >>> cores = [q.reshape(1, 4, 2), c1, torch.randn(3, 6, 1, dtype=torch.float64)]
    >>> _, errs = als_sweeps(a, cores, 2)
    >>> len(errs), errs[2] <= errs[1] <= errs[0]
    (3, True)
    """
    with torch.no_grad():
        work = [c.detach() for c in cores]
        norm = float(a.detach().double().norm())
        best = list(work)
        errors = [_error(a, work, norm)]
        for i in range(sweeps):
            _sweep(a.detach(), work, backward=(i % 2 == 0))
            err = _error(a, work, norm)
            if err < errors[-1]:
                best = list(work)
            errors.append(min(err, errors[-1]))
    return best, errors
