"""Entanglement-style spectra of kernels across cuts.

Definitions used throughout tnconv (``s`` are the singular values across a bipartition, in
descending order, and ``W_r`` the best rank-``r`` approximation, by Eckart-Young):

* **relative error** ``e(r) = ||W - W_r||_F / ||W||_F = sqrt(sum_{i>=r} s_i^2 / sum_i s_i^2)``;
* **norm loss** ``l(r) = 1 - ||W_r||_F / ||W||_F = 1 - sqrt(sum_{i<r} s_i^2 / sum_i s_i^2)``;
* **entropy**: with ``p_i = s_i^2 / sum_j s_j^2`` (normalised), the von Neumann entropy
  ``-sum p_i log p_i`` (``alpha=1``) or the Renyi entropy
  ``log(sum p_i^alpha) / (1 - alpha)``, in bits by default (``base=2``).

All linear algebra runs in torch on the kernel's device, in float32 at least (float64 when
asked), through :mod:`tnconv.decomp` (float32 singular values come from the float64 Gram
matrix, accurate to about ``1e-8 * s_max``). :func:`rank_for_error` and :func:`tail_errors`
are :mod:`tnconv.decomp`'s, re-exported here.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .cuts import CutSpec, parse_cut
from .decomp import check_spectrum, rank_for_error, svdvals, tail_errors
from .legs import SplitSpec
from .network import KernelLayout, compute_dtype, layout

__all__ = [
    "spectrum",
    "entropy",
    "rank_for_error",
    "norm_curve",
    "NormCurve",
    "matricize",
    "tail_errors",
]


def _group_dims(lay: KernelLayout, groups: tuple[tuple[str, ...], ...]) -> list[int]:
    sizes = lay.sizes
    return [math.prod(sizes[n] for n in g) for g in groups]


def matricize(
    kernel: torch.Tensor,
    cut: CutSpec,
    *,
    split: SplitSpec = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, KernelLayout, tuple[tuple[str, ...], ...]]:
    """Reshape a kernel to the matrix of a bipartition.

    Parameters
    ----------
    kernel
        The weight tensor.
    cut
        A bipartition such as ``"out,kh|in,kw"``.
    split
        Optional sub-leg factoring (see :func:`tnconv.kernel_tn`).
    dtype
        Compute dtype (float32 at least; float64 when asked).

    Returns
    -------
    matrix, layout, groups
        The ``rows x cols`` matrix (rows: the left group), the kernel's layout and the
        parsed groups.

    Examples
    --------
    >>> import torch
    >>> m, _, _ = matricize(torch.randn(8, 4, 3, 3), "out,kh|in,kw")
    >>> tuple(m.shape)
    (24, 12)
    """
    lay = layout(kernel, split)
    groups = parse_cut(cut, lay.legs, lay.split, max_groups=2)
    order = [lay.physical_legs.index(n) for g in groups for n in g]
    rows, cols = _group_dims(lay, groups)
    work = kernel.to(compute_dtype(kernel, dtype)).reshape(lay.physical_shape)
    return work.permute(order).reshape(rows, cols), lay, groups


def spectrum(
    kernel: torch.Tensor,
    cut: CutSpec,
    *,
    split: SplitSpec = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Singular values of a kernel across a bipartition.

    Parameters
    ----------
    kernel
        A Linear/Conv1d/Conv2d/Conv3d weight.
    cut
        The bipartition, e.g. ``"out,kh|in,kw"`` (see :mod:`tnconv.cuts`).
    split
        Optional sub-leg factoring, e.g. ``{"out": (4, 4, 4)}``; cuts may then name sub-legs.
    dtype
        ``torch.float64`` for a float64 computation; default: the kernel's dtype, at least
        float32.

    Returns
    -------
    torch.Tensor
        1-D, descending, ``min(rows, cols)`` values, on the kernel's device.

    Examples
    --------
    >>> import torch, tnconv
    >>> w = torch.randn(16, 8, 3, 3)
    >>> tnconv.spectrum(w, "out|in,kh,kw").shape
    torch.Size([16])
    """
    m, _, _ = matricize(kernel, cut, split=split, dtype=dtype)
    return svdvals(m)


def _check_entropy_options(alpha: object, base: object) -> None:
    for name, value in (("alpha", alpha), ("base", base)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, got {value!r}")
    if math.isnan(alpha) or alpha < 0:  # type: ignore[arg-type]
        raise ValueError(f"alpha must be a number >= 0 (inf allowed), got {alpha!r}")
    if not math.isfinite(base) or base <= 0 or base == 1:  # type: ignore[arg-type]
        raise ValueError(f"base must be a finite positive number other than 1, got {base!r}")


def entropy(s: torch.Tensor, *, alpha: float = 1.0, base: float = 2.0) -> torch.Tensor:
    """Von Neumann (``alpha=1``) or Renyi entropy of a spectrum.

    The probabilities are ``p = s**2 / sum(s**2)`` (normalised, so the scale of the kernel
    does not matter). ``alpha=0`` counts the non-zero values (Hartley), ``alpha=inf`` gives
    the min-entropy ``-log max p``.

    Parameters
    ----------
    s
        Singular values (1-D, non-negative).
    alpha
        Renyi order, ``>= 0``.
    base
        Logarithm base (2: bits; ``math.e``: nats).

    Returns
    -------
    torch.Tensor
        A 0-dim tensor on ``s``'s device (0 for an all-zero spectrum).

    Examples
    --------
    >>> import torch
    >>> float(entropy(torch.ones(4)))
    2.0
    >>> round(float(entropy(torch.tensor([3.0, 4.0]), alpha=2)), 4)
    0.8911
    """
    s = check_spectrum(s)
    _check_entropy_options(alpha, base)
    s64 = s.to(torch.float64)
    s64 = s64 / s64.max() if float(s64.max()) > 0 else s64  # no overflow in the squares
    total = (s64 * s64).sum()
    if float(total) == 0.0:
        return torch.zeros((), dtype=s.dtype, device=s.device)
    p = (s64 * s64) / total
    p = p[p > 0]
    log_base = math.log(base)
    if alpha == 1:
        h = -(p * torch.log(p)).sum()
    elif alpha == 0:
        h = torch.log(torch.tensor(float(p.numel()), dtype=torch.float64, device=s.device))
    elif math.isinf(alpha):
        h = -torch.log(p.max())
    else:
        h = torch.log((p**alpha).sum()) / (1.0 - alpha)
    return (h / log_base).to(s.dtype)


class NormCurve(NamedTuple):
    """Truncation curves of one spectrum, indexed by the kept rank ``r = 0 .. n``."""

    rank: torch.Tensor
    rel_error: torch.Tensor
    norm_loss: torch.Tensor


def norm_curve(s: torch.Tensor) -> NormCurve:
    """Relative error and norm loss as functions of the kept rank.

    Parameters
    ----------
    s
        Singular values, descending.

    Returns
    -------
    NormCurve
        ``rank`` (0..n, int64), ``rel_error`` and ``norm_loss`` (float64), all of length
        ``n + 1``; see the module docstring for the definitions.

    Examples
    --------
    >>> import torch
    >>> c = norm_curve(torch.tensor([4.0, 3.0]))
    >>> c.rel_error.tolist(), c.norm_loss.tolist()
    ([1.0, 0.6, 0.0], [1.0, 0.19999999999999996, 0.0])
    """
    s = check_spectrum(s, descending=True)
    err = tail_errors(s)
    s64 = s.to(torch.float64)
    sq = (s64 / s64[0] if float(s64[0]) > 0 else s64) ** 2  # no overflow in the squares
    head = torch.cat([torch.zeros_like(sq[:1]), torch.cumsum(sq, 0)])
    total = head[-1]
    kept = torch.sqrt(head / total) if float(total) > 0 else torch.ones_like(head)
    return NormCurve(
        rank=torch.arange(s.numel() + 1, device=s.device),
        rel_error=err,
        norm_loss=1.0 - kept,
    )
