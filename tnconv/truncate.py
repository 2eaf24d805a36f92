"""Truncation of a kernel along one bipartition (the Eckart-Young optimum).

The kernel is reshaped to the matrix of the cut, decomposed by one SVD, and rebuilt from the
largest singular values. :class:`CutSVD` keeps the SVD so that many truncation levels reuse it
(the sweeps do this); :func:`truncate` is the one-shot form.

How the criteria combine
------------------------
Each criterion alone gives a rank; the kept rank is the **smallest** of them (the most
restrictive wins), and never below 1:

* ``max_bond``: at most this many singular values;
* ``keep``: the fraction of singular values kept, ``ceil(keep * full_rank)``;
* ``max_error``: the smallest rank whose relative error ``||W - W_r|| / ||W||`` is at most
  ``max_error`` (see :mod:`tnconv.spectra`);
* ``cutoff`` with ``cutoff_mode`` (quimb's vocabulary): ``"rel"`` (default) drops values
  ``<= cutoff * s_max``; ``"abs"`` drops values ``<= cutoff``; ``"rsum2"``/``"sum2"`` drop the
  longest tail whose sum of squares is ``<= cutoff`` (relative to the total for ``rsum2``);
  ``"rsum1"``/``"sum1"`` likewise with plain sums.

With no criterion the kernel is kept whole. So ``max_bond`` caps the rank even when
``max_error`` would want more: the report then shows the error actually reached.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .cuts import CutSpec, format_cut
from .legs import SplitSpec
from .spectra import _check_max_error, entropy, matricize, tail_errors

__all__ = ["truncate", "CutSVD", "TruncationReport", "choose_rank", "criteria_from", "CUTOFF_MODES"]

#: Valid ``cutoff_mode`` values (quimb's names).
CUTOFF_MODES = ("rel", "abs", "rsum2", "sum2", "rsum1", "sum1")


def _check_criteria(
    max_bond: Any, keep: Any, max_error: Any, cutoff: Any, cutoff_mode: Any
) -> None:
    if max_bond is not None:
        if isinstance(max_bond, bool) or not isinstance(max_bond, int):
            raise TypeError(f"max_bond must be an int >= 1, got {max_bond!r}")
        if max_bond < 1:
            raise ValueError(f"max_bond must be >= 1, got {max_bond}")
    if keep is not None:
        if isinstance(keep, bool) or not isinstance(keep, (int, float)):
            raise TypeError(f"keep must be a fraction in (0, 1], got {keep!r}")
        if not 0 < keep <= 1:
            raise ValueError(f"keep must be a fraction in (0, 1], got {keep}")
    if max_error is not None:
        _check_max_error(max_error)
    if cutoff is not None:
        if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)):
            raise TypeError(f"cutoff must be a number >= 0, got {cutoff!r}")
        if cutoff < 0 or not math.isfinite(cutoff):
            raise ValueError(f"cutoff must be a finite number >= 0, got {cutoff}")
    if cutoff_mode is not None:
        if cutoff is None:
            raise ValueError(
                f"cutoff_mode={cutoff_mode!r} was given without cutoff; pass cutoff=... too "
                "(or use max_error for a relative-error target)"
            )
        if cutoff_mode not in CUTOFF_MODES:
            raise ValueError(
                f"unknown cutoff_mode {cutoff_mode!r}; valid: {', '.join(CUTOFF_MODES)}"
            )


def _cutoff_rank(s: torch.Tensor, cutoff: float, mode: str) -> int:
    s64 = s.to(torch.float64)
    n = s64.numel()
    if mode in ("rel", "abs"):
        thresh = cutoff * float(s64[0]) if mode == "rel" else cutoff
        return int((s64 > thresh).sum())
    vals = s64 * s64 if mode.endswith("2") else s64
    tails = torch.flip(torch.cumsum(torch.flip(vals, (0,)), 0), (0,))
    tails = torch.cat([tails, tails.new_zeros(1)])
    limit = cutoff * float(tails[0]) if mode.startswith("r") else cutoff
    ok = torch.nonzero(tails <= limit * (1 + 1e-12))
    return int(ok[0, 0]) if ok.numel() else n


def choose_rank(
    s: torch.Tensor,
    *,
    max_bond: int | None = None,
    keep: float | None = None,
    max_error: float | None = None,
    cutoff: float | None = None,
    cutoff_mode: str | None = None,
    norm: float | None = None,
    check: bool = True,
) -> int:
    """The rank the truncation criteria allow for a spectrum (see the module docstring).

    Parameters
    ----------
    s
        Singular values, descending.
    max_bond, keep, max_error, cutoff, cutoff_mode
        The criteria; the smallest rank any of them gives is kept.
    norm
        Reference norm for ``max_error`` (default: the norm of ``s``). The MPS compression
        passes the whole kernel's norm so that per-bond errors add up correctly.
    check
        Validate the criteria (set False when already validated).

    Returns
    -------
    int
        Between 1 and ``len(s)``.

    Examples
    --------
    >>> import torch
    >>> s = torch.tensor([4.0, 2.0, 1.0, 0.5])
    >>> choose_rank(s, keep=0.5), choose_rank(s, max_error=0.3), choose_rank(s, max_bond=1)
    (2, 2, 1)
    """
    if check:
        _check_criteria(max_bond, keep, max_error, cutoff, cutoff_mode)
    n = int(s.numel())
    rank = n
    if max_bond is not None:
        rank = min(rank, max_bond)
    if keep is not None:
        rank = min(rank, math.ceil(keep * n - 1e-9))
    if max_error is not None:
        s64 = s.to(torch.float64)
        total = float((s64 * s64).sum())
        ref = total if norm is None else float(norm) ** 2
        if ref > 0:
            rel = tail_errors(s64) * math.sqrt(total / ref)
            ok = torch.nonzero(rel <= max_error * (1 + 1e-12))
            rank = min(rank, int(ok[0, 0]) if ok.numel() else n)
    if cutoff is not None:
        rank = min(rank, _cutoff_rank(s, cutoff, cutoff_mode or "rel"))
    return max(1, rank)


@dataclass(frozen=True)
class TruncationReport:
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
    params_factored
        ``rows * rank + rank * cols``: parameters of the two factors.
    params_dense
        Number of kernel entries.
    """

    cut: str
    shape: tuple[int, ...]
    rank: int
    full_rank: int
    rel_error: float
    norm_loss: float
    entropy_before: float
    entropy_after: float
    params_factored: int
    params_dense: int

    @property
    def compression(self) -> float:
        """``params_dense / params_factored``."""
        return self.params_dense / self.params_factored

    def as_dict(self) -> dict[str, Any]:
        """The report as a flat dict (``shape`` as a string like ``'64x3x3x3'``)."""
        d = asdict(self)
        d["shape"] = "x".join(map(str, self.shape))
        d["compression"] = self.compression
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
        if self.rows >= self.cols:
            u, s, vh = torch.linalg.svd(m, full_matrices=False)
        else:
            v, s, uh = torch.linalg.svd(m.mT, full_matrices=False)
            u, vh = uh.mT, v.mT
        self.u, self.s, self.vh = u, s, vh
        self.full_rank = int(s.numel())
        self._errors = tail_errors(s)
        self._entropy = float(entropy(s))
        perm = [lay.physical_legs.index(n) for g in groups for n in g]
        self._inverse = [perm.index(i) for i in range(len(perm))]
        sizes = lay.sizes
        self._grouped_shape = [sizes[n] for g in groups for n in g]

    def rank(
        self,
        *,
        max_bond: int | None = None,
        keep: float | None = None,
        max_error: float | None = None,
        cutoff: float | None = None,
        cutoff_mode: str | None = None,
    ) -> int:
        """The rank the criteria keep (see :func:`choose_rank`)."""
        return choose_rank(self.s, max_bond=max_bond, keep=keep, max_error=max_error,
                           cutoff=cutoff, cutoff_mode=cutoff_mode)

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
        total = float((self.s.double() ** 2).sum())
        kept = float((self.s[:r].double() ** 2).sum())
        norm_loss = 1.0 - math.sqrt(kept / total) if total > 0 else 0.0
        return TruncationReport(
            cut=self.cut,
            shape=self.shape,
            rank=r,
            full_rank=self.full_rank,
            rel_error=err,
            norm_loss=norm_loss,
            entropy_before=self._entropy,
            entropy_after=float(entropy(self.s[:r])),
            params_factored=(self.rows + self.cols) * r,
            params_dense=math.prod(self.shape),
        )

    def truncate(self, **criteria: Any) -> tuple[torch.Tensor, TruncationReport]:
        """Truncate by the criteria of :func:`truncate`; returns ``(kernel, report)``."""
        r = self.rank(**criteria)
        return self.reconstruct(r), self.report(r)


def truncate(
    kernel: torch.Tensor,
    cut: CutSpec,
    *,
    max_bond: int | None = None,
    keep: float | None = None,
    max_error: float | None = None,
    cutoff: float | None = None,
    cutoff_mode: str | None = None,
    split: SplitSpec = None,
    dtype: torch.dtype | None = None,
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
    _check_criteria(max_bond, keep, max_error, cutoff, cutoff_mode)
    return CutSVD(kernel, cut, split=split, dtype=dtype).truncate(
        max_bond=max_bond, keep=keep, max_error=max_error, cutoff=cutoff, cutoff_mode=cutoff_mode
    )


def criteria_from(mapping: Mapping[str, Any] | None) -> dict[str, Any]:
    """Pick the truncation criteria out of a mapping (unknown keys raise ValueError).

    Examples
    --------
    >>> criteria_from({"keep": 0.5})
    {'keep': 0.5}
    """
    valid = ("max_bond", "keep", "max_error", "cutoff", "cutoff_mode")
    mapping = dict(mapping or {})
    bad = [k for k in mapping if k not in valid]
    if bad:
        raise ValueError(f"unknown truncation criteria {bad}; valid: {', '.join(valid)}")
    _check_criteria(*(mapping.get(k) for k in valid))
    return mapping
