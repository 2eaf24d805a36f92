"""The entry point of the MPS family: :func:`to_mps`, with ``cut="auto"``.

:func:`to_mps` sits above both the chain decomposition (:mod:`tnconv.mps.chain`) and the
leg-order search (:mod:`tnconv.mps.order`, which decomposes candidate chains with
:func:`~tnconv.mps.chain.decompose_chain`): ``cut="auto"`` asks the search for the best order,
then decomposes along it. Neither lower module imports this one, so the family has no cycle.
"""

from __future__ import annotations

import torch
from typing_extensions import Unpack

from ..cuts import CutSpec
from ..decomp import Criteria, CriteriaOptions
from ..legs import SplitSpec
from .chain import KernelMPS, check_sweeps, decompose_chain
from .order import best_chain

__all__ = ["to_mps"]


def to_mps(
    kernel: torch.Tensor,
    cut: CutSpec | None = None,
    *,
    split: SplitSpec = None,
    dtype: torch.dtype | None = None,
    sweeps: int = 0,
    **criteria: Unpack[CriteriaOptions],
) -> KernelMPS:
    """Decompose a kernel into a matrix product state (tensor train) along a chain.

    Parameters
    ----------
    kernel
        A Linear/Conv1d/Conv2d/Conv3d weight (not modified).
    cut
        The chain, e.g. ``"out|kh|kw|in"`` (the default for Conv2d) or ``"out,kh|kw|in"``.
        ``None``: ``out``, spatial legs, ``in``, one site per (sub-)leg (see
        :func:`tnconv.cuts.default_chain`), so ``split="binary"`` gives a long binary chain.
        ``"auto"``: the chain with the fewest parameters at ``max_error`` (10 % without it),
        from :func:`tnconv.best_chain` (12 leg orders; a guided search with sub-legs).
    max_bond, keep, max_error, cutoff, cutoff_mode
        Truncation criteria (see :mod:`tnconv.truncation`). ``max_bond``, ``keep`` (fraction of
        each bond's full rank) and ``cutoff`` act per bond; ``max_error`` bounds the relative
        error of the whole chain, spent over all bonds together. With none, the chain is exact
        (numerically zero singular values dropped).
    split
        Factor legs into sub-legs first: ``{"out": (4, 4, 4)}``, ``"binary"`` or ``"prime"``.
    dtype
        Compute dtype (float32 at least; float64 when asked).
    sweeps
        One-site ALS sweeps refining a truncated chain at fixed bond dimensions (int >= 0);
        :attr:`KernelMPS.sweep_errors` lists the error before and after each.

    Returns
    -------
    KernelMPS
        The chain: quimb network, bond spectra, bond dimensions, parameter count,
        compression ratio, error bound and measured error, ``to_kernel()``.

    Raises
    ------
    TypeError, ValueError
        Bad kernel, cut, split, criteria or sweeps.

    Examples
    --------
    >>> import torch, tnconv
    >>> w = torch.randn(64, 32, 3, 3)
    >>> mps = tnconv.to_mps(w, "out|kh|kw|in", max_bond=8)
    >>> mps.bond_dims
    [8, 8, 8]
    >>> mps.to_kernel().shape
    torch.Size([64, 32, 3, 3])
    >>> mps = tnconv.to_mps(w, max_error=0.5)
    >>> mps.rel_error <= 0.5
    True
    >>> auto = tnconv.to_mps(w, "auto", max_error=0.5)
    >>> auto.num_params <= mps.num_params and auto.rel_error <= 0.5
    True
    """
    crit = Criteria.from_options(dict(criteria))  # validated before any work
    if isinstance(cut, str) and cut.strip().lower() == "auto":
        check_sweeps(sweeps)
        cut = best_chain(kernel, split=split, max_error=crit.max_error or 0.1).best
    return decompose_chain(kernel, cut, crit, split=split, dtype=dtype, sweeps=sweeps)
