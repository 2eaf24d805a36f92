"""Variational (ALS) sweeps over an MPS chain at fixed bond dimensions, array level.

Cores are ``(r_{k-1}, d_k, r_k)`` tensors (``r_{-1} = r_{n-1} = 1``) approximating a dense
tensor ``a`` of shape ``(d_0, ..., d_{n-1})``. With every core but one orthonormal (left of it
left-orthonormal, right of it right-orthonormal), the best core ``k`` is the projection of
``a`` onto the environment, so each update is optimal given the others and the error cannot
increase (one-site ALS). A sweep visits every site once, alternating direction (the first one
right to left, from a left-canonical chain such as the TT-SVD's). The error after every sweep
is measured on the dense tensor, in float64; the best chain is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["als_sweeps", "chain_dense"]


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
    return out.reshape([int(c.shape[1]) for c in cores])


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
