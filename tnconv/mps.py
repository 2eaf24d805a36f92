"""Kernels as matrix product states (tensor trains) along a chain of sites.

:func:`to_mps` turns a kernel into a chain such as ``"out|kh|kw|in"``: one site per group of
legs, bonds ``b0, b1, ...`` between neighbouring sites. The site tensors are computed at the
array level (:mod:`tnconv.mps_ranks`, :mod:`tnconv.mps_sweeps`), in torch on the kernel's
device (with autograd), and held by a labelled quimb network:

1. **TT-SVD, left to right** -- the kernel, its axes in chain order, is split site by site,
   each split an SVD truncated to the bond's rank (an orthogonal projection: the squared error
   is exactly the discarded weight). Numerically zero singular values are always dropped and
   ranks never exceed ``min(r_{k-1} d_k, d_{k+1} r_{k+1})``: the bonds are minimal.
2. **ranks** -- ``max_bond``, ``keep`` (of each bond's full rank) and ``cutoff`` act per bond,
   the smallest rank winning (:class:`tnconv.decomp.Criteria`). ``max_error`` bounds the
   relative error of the *whole* chain and is spent over all bonds together
   (:func:`tnconv.mps_ranks.allocate_error`; for 3- and 4-site chains an "ends first" chain,
   :func:`tnconv.mps_ranks.ends_first`, is taken instead where it has fewer parameters): the
   result's measured error is at most ``max_error``, with fewer parameters than an even split
   of the error over the bonds and never more than the smallest uniform rank meeting it.
3. **sweeps** (optional) -- one-site ALS sweeps at fixed bond dimensions lower the error
   further (:func:`tnconv.mps_sweeps.als_sweeps`; never increasing, the best chain is kept).

:attr:`KernelMPS.bond_spectra`, the singular values of every bipartition
``sites[:k+1] | sites[k+1:]`` of the original kernel, are computed on first access (float64
Gram route of :func:`tnconv.decomp.svdvals`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from typing_extensions import Unpack

from .contract import contract
from .cuts import CutSpec, default_chain, format_cut, parse_cut
from .decomp import Criteria, CriteriaOptions, frobenius_norm, svdvals
from .factors import KernelFactors
from .legs import SplitSpec
from .mps_ranks import (
    TTSVD,
    allocate_error,
    chain_params,
    ends_first,
    ends_first_cores,
    minimal_ranks,
    tail_squares,
)
from .mps_sweeps import als_sweeps
from .network import compute_dtype, import_quimb, layout

__all__ = ["to_mps", "KernelMPS", "cut_spectra"]

#: Relative size ``||tail|| / ||W||`` below which singular values count as zero, per dtype.
_ZERO_TOL = {torch.float64: 1e-13, torch.float32: 1e-6}
#: Relative slack kept below ``max_error`` (float rounding of the measured error).
_MARGIN = {torch.float64: 1e-9, torch.float32: 2e-5}


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


def _left_canonical(cores: list[torch.Tensor]) -> list[torch.Tensor]:
    """The same chain with every core but the last left-orthonormal (QR, left to right)."""
    cores = list(cores)
    for k in range(len(cores) - 1):
        r0, d, r1 = cores[k].shape
        q, r = torch.linalg.qr(cores[k].reshape(r0 * d, r1))
        cores[k] = q.reshape(r0, d, -1)
        nxt = cores[k + 1]
        cores[k + 1] = (r @ nxt.reshape(nxt.shape[0], -1)).reshape(r.shape[0], *nxt.shape[1:])
    return cores


def _canonical_minimal(cores: list[torch.Tensor], limit: float) -> list[torch.Tensor]:
    """Left-orthonormalise, then right to left drop the bond directions whose Schmidt weight
    ``||tail||`` is at most ``limit`` (numerically zero): minimal bonds, right-canonical."""
    cores = _left_canonical(cores)
    for k in range(len(cores) - 1, 0, -1):
        r0, d, r1 = cores[k].shape
        v, s, uh = torch.linalg.svd(cores[k].reshape(r0, d * r1).mT, full_matrices=False)
        tails = tail_squares(s)
        keep = next(r for r in range(1, len(tails)) if tails[r] <= limit**2)
        cores[k] = v[:, :keep].mT.reshape(keep, d, r1)
        left = cores[k - 1]
        us = uh.mT[:, :keep] * s[:keep]
        cores[k - 1] = (left.reshape(-1, r0) @ us).reshape(*left.shape[:-1], keep)
    return cores


class KernelMPS(KernelFactors):
    """A kernel as a chain of site tensors (returned by :func:`to_mps`).

    Attributes
    ----------
    tn : quimb.tensor.TensorNetwork
        The chain. Site ``k`` is tagged ``"I{k}"``; physical legs keep their labels; the
        bond between sites ``k`` and ``k+1`` is ``"b{k}"``.
    sites : tuple of tuple of str
        Physical legs of each site.
    legs, shape, split, physical_legs
        The kernel's legs, shape, sub-leg factoring and physical (sub-)leg names.
    bond_spectra : list of torch.Tensor
        Singular values of the bipartitions ``sites[:k+1] | sites[k+1:]`` of the original
        kernel, full length (computed on first access).
    error_bound : float or None
        The ``max_error`` asked for, a bound on :attr:`rel_error` (None without it).
    rel_error : float
        Relative error ``||W - W_mps||_F / ||W||_F`` actually reached (measured).
    sweep_errors : list of float
        Relative error before the ALS sweeps and after each (empty without sweeps).
    """

    kind = "mps"

    def __init__(self, tn: Any, sites: tuple[tuple[str, ...], ...], lay: Any,
                 out_dtype: torch.dtype, chain: torch.Tensor, error_bound: float | None,
                 kernel: torch.Tensor, *, spectra: list[torch.Tensor] | None = None,
                 sweep_errors: list[float] | None = None) -> None:
        self.tn = tn
        self.sites = sites
        self.split = dict(lay.split)
        self.physical_legs = lay.physical_legs
        self.out_dtype = out_dtype
        self.kernel_legs = lay.legs
        self.sweep_errors: list[float] = list(sweep_errors or [])
        self._chain = chain.detach()
        self._spectra = spectra
        super().__init__(self.arrays, kernel, error_bound)

    @property
    def bond_spectra(self) -> list[torch.Tensor]:
        """Singular values of every bipartition ``sites[:k+1] | sites[k+1:]`` of the kernel."""
        if self._spectra is None:
            self._spectra = cut_spectra(self._chain)
        return self._spectra

    @property
    def chain(self) -> torch.Tensor:
        """The kernel decomposed, axes in chain order, one axis per site (compute dtype,
        detached): :func:`cut_spectra` of it gives :attr:`bond_spectra`."""
        return self._chain

    @property
    def full_bond_dims(self) -> list[int]:
        """Rank of every bipartition without truncation: ``min(left size, right size)``."""
        dims = self._chain.shape
        return [min(math.prod(dims[: k + 1]), math.prod(dims[k + 1:]))
                for k in range(len(dims) - 1)]

    @property
    def num_sites(self) -> int:
        """Number of sites."""
        return len(self.sites)

    @property
    def arrays(self) -> list[torch.Tensor]:
        """Site tensors, axes ordered (left bond, the site's legs, right bond)."""
        return [self.tn[f"I{k}"].data for k in range(self.num_sites)]

    @property
    def inds(self) -> list[tuple[str, ...]]:
        """Index names of each site tensor, matching :attr:`arrays`."""
        return [self.tn[f"I{k}"].inds for k in range(self.num_sites)]

    @property
    def bond_dims(self) -> list[int]:
        """Dimension of every bond after truncation."""
        return [self.tn[f"I{k}"].ind_size(f"b{k}") for k in range(self.num_sites - 1)]

    @property
    def cut(self) -> str:
        """The chain as a cut string."""
        return format_cut(self.sites)

    def to_kernel(self) -> torch.Tensor:
        """Contract the chain to the dense kernel (input layout, dtype and device).

        Goes through a cached opt_einsum expression; differentiable with respect to the site
        tensors.

        Examples
        --------
        >>> import torch, tnconv
        >>> w = torch.randn(8, 4, 3, 3)
        >>> tnconv.to_mps(w).to_kernel().shape
        torch.Size([8, 4, 3, 3])
        """
        w = contract(self.arrays, self.inds, self.physical_legs, shape=self.shape)
        return w.to(self.out_dtype)

    @property
    def legs(self) -> tuple[str, ...]:  # type: ignore[override]
        """The kernel's legs (before any split)."""
        return self.kernel_legs

    def summary(self) -> dict[str, Any]:
        """Bond dimensions, parameters, compression and errors as a dict."""
        return {
            "cut": self.cut,
            "shape": "x".join(map(str, self.shape)),
            "bond_dims": self.bond_dims,
            "full_bond_dims": self.full_bond_dims,
            "num_params": self.num_params,
            "dense_params": self.dense_params,
            "compression_ratio": self.compression_ratio,
            "rel_error": self.rel_error,
            "error_bound": self.error_bound,
            "sweep_errors": self.sweep_errors,
        }

    def __repr__(self) -> str:
        return (f"KernelMPS(cut={self.cut!r}, shape={self.shape}, bond_dims={self.bond_dims}, "
                f"compression={self.compression_ratio:.2f}x, rel_error={self.rel_error:.3g})")


def _check_sweeps(sweeps: object) -> int:
    if isinstance(sweeps, bool) or not isinstance(sweeps, int):
        raise TypeError(f"sweeps must be an int >= 0, got {sweeps!r}")
    if sweeps < 0:
        raise ValueError(f"sweeps must be an int >= 0, got {sweeps}")
    return sweeps


def _ranks(tt: TTSVD, crit: Criteria, full: list[int],
           chain: torch.Tensor) -> tuple[list[int], list[torch.Tensor] | None, bool]:
    """Bond ranks from the criteria (before ``cutoff``, which acts on each step's spectrum),
    the cut spectra where ``max_error`` needed them, and whether the ranks are those of an
    ends-first chain (:func:`tnconv.mps_ranks.ends_first`, fewer parameters than the TT-SVD's)."""
    caps = list(full)
    if crit.max_bond is not None:
        caps = [min(c, crit.max_bond) for c in caps]
    if crit.keep is not None:
        caps = [min(c, math.ceil(crit.keep * f - 1e-9)) for c, f in zip(caps, full, strict=True)]
    caps = minimal_ranks(tt.dims, caps)
    if crit.max_error is None:
        return caps, None, False
    spectra = cut_spectra(chain)
    margin = _MARGIN[chain.dtype]
    budget = (crit.max_error**2) * tt.norm2 * (1 - margin)
    with torch.no_grad():
        bounds = [tail_squares(s) for s in spectra]
        ranks = allocate_error(tt, caps, bounds, budget)
        if crit.cutoff is None:
            ends, err2 = ends_first(chain, caps, budget, end_tails=[bounds[0], bounds[-1]])
            if err2 <= budget and (chain_params(tt.dims, minimal_ranks(tt.dims, ends))
                                   < chain_params(tt.dims, ranks)):
                return ends, spectra, True
    return ranks, spectra, False


def _extreme_scale(kernel: torch.Tensor) -> float:
    """The kernel's norm where squared singular values would over- or underflow, else 1."""
    norm = frobenius_norm(kernel)
    return norm if norm > 1e100 or 0.0 < norm < 1e-100 else 1.0


def _scaled_criteria(crit: Criteria, scale: float) -> Criteria:
    """``crit`` for the kernel divided by ``scale``: absolute cutoffs scale with it."""
    if scale == 1.0 or crit.cutoff is None or str(crit.cutoff_mode).startswith("r"):
        return crit
    cutoff = crit.cutoff / scale
    return crit.replace(cutoff=cutoff / scale if crit.cutoff_mode == "sum2" else cutoff)


def _build(kernel: torch.Tensor, chain: torch.Tensor, crit: Criteria,
           sweeps: int) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, list[float]]:
    """The chain's cores ``(r_{k-1}, d_k, r_k)``, the cut spectra (if computed) and the
    sweep errors."""
    dims = tuple(int(d) for d in chain.shape)
    full = [min(math.prod(dims[: k + 1]), math.prod(dims[k + 1:])) for k in range(len(dims) - 1)]
    tol = _ZERO_TOL[chain.dtype]
    ranks, spectra, ends = full, None, False
    if crit.active:
        with torch.no_grad():
            ranks, spectra, ends = _ranks(TTSVD(chain.detach(), tol, fast=True), crit, full,
                                          chain)
    grad = kernel.requires_grad and torch.is_grad_enabled()
    tt = TTSVD(chain if grad else chain.detach(), tol)
    if ends:
        cores = ends_first_cores(chain if grad else chain.detach(), ranks)
    elif crit.cutoff is not None:
        cut = Criteria(cutoff=crit.cutoff, cutoff_mode=crit.cutoff_mode)
        plan = list(ranks)

        def choose(k: int, s: torch.Tensor, tails: list[float]) -> int:
            return min(plan[k], cut.rank(s))

        _, _, cores = tt.run(choose)
    else:
        _, _, cores = tt.run(ranks)
    errors: list[float] = []
    limit = tol * math.sqrt(tt.norm2)
    if sweeps and len(cores) > 1:
        with torch.no_grad():
            start = _left_canonical(_canonical_minimal(cores, limit))
            cores, errors = als_sweeps(chain, start, sweeps)
            cores = _canonical_minimal(cores, limit)
        return cores, spectra, errors
    if crit.active:
        cores = _canonical_minimal(cores, limit)
    return cores, spectra, errors


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
        Truncation criteria (see :mod:`tnconv.truncate`). ``max_bond``, ``keep`` (fraction of
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
    qtn = import_quimb()
    crit = Criteria.from_options(criteria)
    sweeps = _check_sweeps(sweeps)
    lay = layout(kernel, split)
    if isinstance(cut, str) and cut.strip().lower() == "auto":
        from .chains import best_chain  # chains uses to_mps: imported here, not at the top

        cut = best_chain(kernel, split=split, max_error=crit.max_error or 0.1).best
    chain = default_chain(lay.legs, lay.split) if cut is None else cut
    sites = parse_cut(chain, lay.legs, lay.split, min_groups=2)
    n = len(sites)
    order = [lay.physical_legs.index(leg) for site in sites for leg in site]
    sizes = [tuple(lay.sizes[leg] for leg in site) for site in sites]
    work = kernel.to(compute_dtype(kernel, dtype)).reshape(lay.physical_shape).permute(order)
    work = work.reshape([math.prod(sz) for sz in sizes])
    scale = _extreme_scale(kernel)
    cores, spectra, errors = _build(kernel, work / scale if scale != 1.0 else work,
                                    _scaled_criteria(crit, scale), sweeps)
    if scale != 1.0:  # squares of singular values would over- or underflow: built at norm 1
        cores = [cores[0] * scale, *cores[1:]]
        spectra = None if spectra is None else [s * scale for s in spectra]
    tensors = []
    for k, (core, site) in enumerate(zip(cores, sites, strict=True)):
        data = core.reshape(core.shape[0], *sizes[k], core.shape[-1])
        data = data[0] if k == 0 else data
        data = data[..., 0] if k == n - 1 else data
        if errors and kernel.requires_grad:  # after sweeps: the site tensors are the leaves
            data = data.detach().requires_grad_(True)
        inds = ((f"b{k - 1}",) if k else ()) + site + ((f"b{k}",) if k < n - 1 else ())
        tensors.append(qtn.Tensor(data, inds=inds, tags={f"I{k}", "SITE"}))
    bound = None if crit.max_error is None else float(crit.max_error)
    return KernelMPS(qtn.TensorNetwork(tensors), sites, lay, kernel.dtype, work, bound, kernel,
                     spectra=spectra, sweep_errors=errors)
