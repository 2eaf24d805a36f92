"""Kernels as matrix product states (tensor trains): the chain family.

One package for everything about chains, from the arrays up::

    als.py      array level: chain contractions, canonical forms, cut spectra, ALS sweeps
    ranks.py    TT-SVD with exact errors, minimal ranks, max_error spent over a whole chain
    chain.py    KernelMPS and decompose_chain: the TT-SVD along one given chain
    order.py    best_chain / ChainTable: the leg order with the fewest parameters or least error
    build.py    to_mps, the entry point (``cut="auto"`` asks order.py, then decomposes)
    operator.py to_mpo / KernelMPO: matrix product operators, one site per sub-leg pair

Imports go one way (als <- ranks <- chain <- order <- build, and chain <- operator), so
``to_mps(cut="auto")`` and :func:`best_chain` meet without a cycle.

Examples
--------
>>> import torch
>>> from tnconv.mps import to_mps
>>> to_mps(torch.randn(16, 8, 3, 3), "out|kh|kw|in", max_bond=4).bond_dims
[4, 4, 4]
"""

from __future__ import annotations

from .als import als_sweeps, canonical_minimal, chain_dense, cut_spectra
from .build import to_mps
from .chain import KernelMPS, decompose_chain
from .operator import KernelMPO, bond_for_ratio, mpo_shapes, to_mpo
from .order import ChainTable, best_chain
from .ranks import allocate_error, minimal_ranks

__all__ = ["ChainTable", "KernelMPO", "KernelMPS", "allocate_error", "als_sweeps", "best_chain",
           "bond_for_ratio", "canonical_minimal", "chain_dense", "cut_spectra",
           "decompose_chain", "minimal_ranks", "mpo_shapes", "to_mpo", "to_mps"]
