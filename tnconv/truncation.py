"""Truncation of a kernel along one bipartition (the Eckart-Young optimum).

The kernel is reshaped to the matrix of the cut, decomposed by one SVD, and rebuilt from the
largest singular values. :class:`CutSVD` keeps the SVD so that many truncation levels reuse it
(the sweeps do this); :func:`truncate` is the one-shot form.

The criteria (``max_bond``, ``keep``, ``max_error``, ``cutoff``, ``cutoff_mode``) are
:class:`tnconv.decomp.Criteria`: the smallest rank any of them gives is kept, never below 1,
and with none the kernel is kept whole. So ``max_bond`` caps the rank even when ``max_error``
would want more: the report then shows the error actually reached.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from typing_extensions import Unpack

from .cuts import CutSpec, format_cut
from .decomp import Criteria, CriteriaOptions, norm_loss, svd, tail_errors
from .legs import SplitSpec
from .sizes import Sizes, renamed
from .spectra import entropy, matricize

__all__ = ["truncate", "CutSVD", "TruncationReport"]

@dataclass(frozen=True)
class TruncationReport(Sizes):
    """What a truncation along one cut did.

    Attributes
    ----------
    cut
        The bipartition, in physical leg names.
    shape
        The kernel's shape.
    rank, full_rank
        Kept rank and ``min(rows, cols)``.
    rel_error
        ``||W - W_r||_F / ||W||_F`` (the Eckart-Young tail; exact for this cut).
    norm_loss
        ``1 - ||W_r||_F / ||W||_F``.
    entropy_before, entropy_after
        Von Neumann entropy (bits) of the full and of the kept spectrum.
    params_before
        Number of kernel entries (the dense kernel).
    params_after
        ``rows * rank + rank * cols``: parameters of the two factors.

    The derived sizes use tnconv's one vocabulary: :attr:`params_fraction` (after / before) and
    :attr:`compression_ratio` (before / after). ``params_factored``, ``params_dense`` and
    ``compression`` are the old names (one release, with a ``FutureWarning``).
    """

    cut: str
    shape: tuple[int, ...]
    rank: int
    full_rank: int
    rel_error: float
    norm_loss: float
    entropy_before: float
    entropy_after: float
    params_before: int
    params_after: int

    params_factored = renamed("params_factored", "params_after")
    params_dense = renamed("params_dense", "params_before")
    compression = renamed("compression", "compression_ratio")

    def as_dict(self) -> dict[str, Any]:
        """The report as a flat dict (``shape`` as a string like ``'64x3x3x3'``)."""
        d = asdict(self)
        d["shape"] = "x".join(map(str, self.shape))
        d["compression_ratio"] = self.compression_ratio
        return d


class CutSVD:
    """One SVD of a kernel across a bipartition, reusable for any number of truncations.

    Parameters
    ----------
    kernel
        The weight tensor (not modified; results keep its dtype and device).
    cut
        A bipartition such as ``"out,kh|in,kw"``.
    split
        Optional sub-leg factoring.
    dtype
        Compute dtype (float32 at least, float64 when asked).

    Attributes
    ----------
    s : torch.Tensor
        Singular values, descending (compute dtype, kernel's device).
    full_rank : int
    cut : str

    Examples
    --------
    >>> import torch
    >>> svd = CutSVD(torch.randn(16, 8, 3, 3), "out,kh|in,kw")
    >>> [svd.report(r).rank for r in (24, 12, 1)]
    [24, 12, 1]
    """

    def __init__(
        self,
        kernel: torch.Tensor,
        cut: CutSpec,
        *,
        split: SplitSpec = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        m, lay, groups = matricize(kernel, cut, split=split, dtype=dtype)
        self.layout = lay
        self.groups = groups
        self.cut = format_cut(groups)
        self.shape = lay.shape
        self.out_dtype = kernel.dtype
        self.rows, self.cols = int(m.shape[0]), int(m.shape[1])
        self.u, self.s, self.vh = u, s, _ = svd(m)
        self.full_rank = int(s.numel())
        self._errors = tail_errors(s)
        self._entropy = float(entropy(s))
        perm = [lay.physical_legs.index(n) for g in groups for n in g]
        self._inverse = [perm.index(i) for i in range(len(perm))]
        sizes = lay.sizes
        self._grouped_shape = [sizes[n] for g in groups for n in g]

    def rank(self, criteria: Criteria | None = None, **kwargs: Any) -> int:
        """The rank the criteria keep: a :class:`~tnconv.decomp.Criteria` or its keywords."""
        if criteria is None:
            criteria = Criteria.from_options(kwargs)
        elif kwargs:
            raise TypeError("pass a Criteria or keyword criteria, not both")
        return criteria.rank(self.s)

    def _check_rank(self, rank: int) -> int:
        if isinstance(rank, bool) or not isinstance(rank, int):
            raise TypeError(f"rank must be an int, got {rank!r}")
        if not 1 <= rank <= self.full_rank:
            raise ValueError(f"rank must be in [1, {self.full_rank}], got {rank}")
        return rank

    def reconstruct(self, rank: int) -> torch.Tensor:
        """The best rank-``rank`` kernel for this cut, in the input's layout, dtype and device.

        Examples
        --------
        >>> import torch
        >>> w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
        >>> torch.allclose(CutSVD(w, "out|in,kh,kw").reconstruct(4), w)
        True
        """
        r = self._check_rank(rank)
        m = (self.u[:, :r] * self.s[:r]) @ self.vh[:r]
        w = m.reshape(self._grouped_shape).permute(self._inverse)
        return w.reshape(self.shape).to(self.out_dtype)

    def report(self, rank: int) -> TruncationReport:
        """The :class:`TruncationReport` of keeping ``rank`` singular values."""
        r = self._check_rank(rank)
        err = float(self._errors[r])
        return TruncationReport(
            cut=self.cut,
            shape=self.shape,
            rank=r,
            full_rank=self.full_rank,
            rel_error=err,
            norm_loss=norm_loss(self.s, r),
            entropy_before=self._entropy,
            entropy_after=float(entropy(self.s[:r])),
            params_before=math.prod(self.shape),
            params_after=(self.rows + self.cols) * r,
        )

    def truncate(self, criteria: Criteria | None = None, **kwargs: Any
                 ) -> tuple[torch.Tensor, TruncationReport]:
        """Truncate by the criteria of :func:`truncate`; returns ``(kernel, report)``."""
        r = self.rank(criteria, **kwargs)
        return self.reconstruct(r), self.report(r)


def truncate(
    kernel: torch.Tensor,
    cut: CutSpec,
    *,
    split: SplitSpec = None,
    dtype: torch.dtype | None = None,
    **criteria: Unpack[CriteriaOptions],
) -> tuple[torch.Tensor, TruncationReport]:
    """Truncate a kernel along one bipartition, keeping the largest singular values.

    Parameters
    ----------
    kernel
        A Linear/Conv1d/Conv2d/Conv3d weight. Not modified.
    cut
        A bipartition, e.g. ``"out,kh|in,kw"``. Chains (more than two groups) belong to
        :func:`tnconv.to_mps`.
    max_bond, keep, max_error, cutoff, cutoff_mode
        Truncation criteria; the smallest rank any of them gives is kept (module docstring).
        With none, nothing is truncated.
    split
        Optional sub-leg factoring (``{"out": (4, 4, 4)}``, ``"binary"``, ``"prime"``).
    dtype
        Compute dtype (float32 at least; float64 when asked).

    Returns
    -------
    kernel_t : torch.Tensor
        Same shape, dtype and device as ``kernel``; the Eckart-Young optimum of that rank.
    report : TruncationReport
        Kept and full rank, relative error, norm loss, entropies, parameter counts.

    Raises
    ------
    TypeError, ValueError
        Bad kernel, bad cut, or criteria out of range (``max_bond < 1``, ``keep`` outside
        (0, 1], ``max_error`` outside [0, 1), ``cutoff_mode`` without ``cutoff``).

    Examples
    --------
    >>> import torch, tnconv
    >>> w = torch.randn(32, 16, 3, 3)
    >>> wt, rep = tnconv.truncate(w, "out,kh|in,kw", keep=0.25)
    >>> wt.shape == w.shape, rep.rank, rep.full_rank
    (True, 12, 48)
    """
    crit = Criteria.from_options(criteria)
    return CutSVD(kernel, cut, split=split, dtype=dtype).truncate(crit)
