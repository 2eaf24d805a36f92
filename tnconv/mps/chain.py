"""Kernels as matrix product states (tensor trains) along a chain of sites.

:func:`to_mps` turns a kernel into a chain such as ``"out|kh|kw|in"``: one site per group of
legs, bonds ``b0, b1, ...`` between neighbouring sites. The site tensors are computed at the
array level (:mod:`tnconv.mps.ranks`, :mod:`tnconv.mps.als`), in torch on the kernel's
device (with autograd), and held by a labelled quimb network (built when first asked for):

1. **TT-SVD, left to right** -- the kernel, its axes in chain order, is split site by site,
   each split an SVD truncated to the bond's rank (an orthogonal projection: the squared error
   is exactly the discarded weight). Numerically zero singular values are always dropped and
   ranks never exceed ``min(r_{k-1} d_k, d_{k+1} r_{k+1})``: the bonds are minimal.
2. **ranks** -- ``max_bond``, ``keep`` (of each bond's full rank) and ``cutoff`` act per bond,
   the smallest rank winning (:class:`tnconv.decomp.Criteria`). ``max_error`` bounds the
   relative error of the *whole* chain, spent over all bonds together
   (:func:`tnconv.mps.ranks.allocate_error`, or for 3 and 4 sites an "ends first" chain,
   :func:`tnconv.mps.ranks.ends_first`, where it has fewer parameters): fewer parameters
   than an even split of the error and never more than the smallest uniform rank meeting it.
3. **sweeps** (optional) -- one-site ALS sweeps at fixed bond dimensions lower the error
   further (:func:`tnconv.mps.als.als_sweeps`; never increasing, the best chain is kept).
4. **canonical form** -- a truncated chain is swept right to left
   (:func:`tnconv.mps.als.canonical_minimal`): numerically zero bond directions are
   dropped, every site but the first is right-orthonormal (by SVDs, but at the bonds where
   the TT-SVD's later steps kept everything: its own Schmidt vectors are those).

:attr:`KernelMPS.bond_spectra`, the singular values of every bipartition ``sites[:k+1] |
sites[k+1:]`` of the original kernel, are computed on first access (float64 Gram route).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import torch

from ..contraction import contract
from ..cuts import CutSpec, default_chain, format_cut, parse_cut
from ..decomp import Criteria, frobenius_norm
from ..factors import KernelFactors
from ..legs import SplitSpec
from ..network import compute_dtype, import_quimb, layout
from .als import (
    als_sweeps,
    canonical_minimal,
    chain_dense,
    chain_params,
    cut_spectra,
    left_canonical,
    tail_squares,
)
from .ranks import TTSVD, allocate_error, ends_first, ends_first_cores, minimal_ranks

__all__ = ["KernelMPS", "check_sweeps", "cut_spectra", "decompose_chain"]

#: Relative size ``||tail|| / ||W||`` below which singular values count as zero, per dtype.
_ZERO_TOL = {torch.float64: 1e-13, torch.float32: 1e-6}
#: Relative slack kept below ``max_error`` (float rounding of the measured error).
_MARGIN = {torch.float64: 1e-9, torch.float32: 2e-5}
#: Relative errors from which a truncated TT-SVD's error is taken from its discarded weights
#: (below, rounding is not negligible against it: measured on the dense kernel).
_FROM_WEIGHTS = {torch.float64: 1e-6, torch.float32: 1e-3}


class _Plan(NamedTuple):
    """One chain on one kernel layout: physical axes in chain order, leg sizes and size of
    every site, index names of the site tensors, sizes in chain order, inverse permutation."""

    order: tuple[int, ...]
    sizes: tuple[tuple[int, ...], ...]
    dims: tuple[int, ...]
    inds: tuple[tuple[str, ...], ...]
    chain_sizes: tuple[int, ...]
    unpermute: tuple[int, ...]


@functools.lru_cache(maxsize=256)
def _plan(sites: tuple[tuple[str, ...], ...], legs: tuple[str, ...],
          shape: tuple[int, ...]) -> _Plan:
    """:class:`_Plan` of the chain ``sites`` on physical legs ``legs`` of sizes ``shape``."""
    n, order = len(sites), tuple(legs.index(leg) for site in sites for leg in site)
    size = dict(zip(legs, shape, strict=True))
    inds = tuple(((f"b{k - 1}",) if k else ()) + site + ((f"b{k}",) if k < n - 1 else ())
                 for k, site in enumerate(sites))
    sizes = tuple(tuple(size[leg] for leg in site) for site in sites)
    return _Plan(order, sizes, tuple(math.prod(sz) for sz in sizes), inds, tuple(
        shape[i] for i in order), tuple(sorted(range(len(order)), key=order.__getitem__)))


@functools.lru_cache(maxsize=256)
def _parsed(cut: str | None, legs: tuple[str, ...],
            split: tuple[tuple[str, tuple[int, ...]], ...]) -> tuple[tuple[str, ...], ...]:
    """The sites of a cut string (``None``: the default chain), cached."""
    sp = dict(split)
    return parse_cut(default_chain(legs, sp) if cut is None else cut, legs, sp, min_groups=2)


class KernelMPS(KernelFactors):
    """A kernel as a chain of site tensors (returned by :func:`to_mps`).

    Attributes
    ----------
    tn : quimb.tensor.TensorNetwork
        The chain. Site ``k`` is tagged ``"I{k}"``; physical legs keep their labels; the
        bond between sites ``k`` and ``k+1`` is ``"b{k}"``. Built on first access; from then
        on :attr:`arrays`, :attr:`inds`, :attr:`bond_dims` and :meth:`to_kernel` read it.
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
        Relative error ``||W - W_mps||_F / ||W||_F`` actually reached. A truncated TT-SVD is
        an orthogonal projection of the kernel, so its squared error is the weight it
        discarded: that gives it where rounding is negligible against it (above ``1e-3`` in
        float32, ``1e-6`` in float64; equal to the measured value to ``~1e-6`` resp.
        ``1e-12`` relative). Otherwise it is measured on the dense kernel.
    sweep_errors : list of float
        Relative error before the ALS sweeps and after each (empty without sweeps).
    """

    kind = "mps"

    def __init__(self, arrays: list[torch.Tensor], sites: tuple[tuple[str, ...], ...],
                 lay: Any, out_dtype: torch.dtype, chain: torch.Tensor,
                 error_bound: float | None, kernel: torch.Tensor, *,
                 spectra: list[torch.Tensor] | None = None,
                 sweep_errors: list[float] | None = None, rel_error: float | None = None) -> None:
        plan = _plan(tuple(sites), lay.physical_legs, lay.physical_shape)
        self._arrays, self._inds = list(arrays), list(plan.inds)
        self._tn: Any = None  # the quimb network, built on first access of `tn`
        self.sites, self.split, self.physical_legs = sites, dict(lay.split), lay.physical_legs
        self.out_dtype, self.kernel_legs, self.error_bound = out_dtype, lay.legs, error_bound
        self.sweep_errors: list[float] = list(sweep_errors or [])
        self._chain, self._spectra = chain.detach(), spectra
        self._chain_sizes, self._unpermute = plan.chain_sizes, plan.unpermute
        self.shape = tuple(kernel.shape)
        if rel_error is None:  # measured on the dense kernel (as KernelFactors does)
            with torch.no_grad():
                ref = kernel.detach().double()
                norm = frobenius_norm(ref)  # scaled: no overflow
                diff = frobenius_norm(self.to_kernel().double() - ref)
            rel_error = diff / norm if norm > 0 else diff
        self.rel_error = rel_error

    @property
    def tn(self) -> Any:
        """The chain as a labelled ``quimb.tensor.TensorNetwork`` (built on first access; the
        site tensors are the :attr:`arrays`)."""
        if self._tn is None:
            qtn = import_quimb()
            self._tn = qtn.TensorNetwork([
                qtn.Tensor(a, inds=ix, tags={f"I{k}", "SITE"})
                for k, (a, ix) in enumerate(zip(self._arrays, self._inds, strict=True))])
        return self._tn

    @tn.setter
    def tn(self, value: Any) -> None:
        self._tn = value

    @property
    def factors(self) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        """The site tensors as a tuple (:attr:`arrays`)."""
        return tuple(self.arrays)

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
        if self._tn is None:
            return list(self._arrays)
        return [self._tn[f"I{k}"].data for k in range(self.num_sites)]

    @property
    def inds(self) -> list[tuple[str, ...]]:
        """Index names of each site tensor, matching :attr:`arrays`."""
        if self._tn is None:
            return list(self._inds)
        return [self._tn[f"I{k}"].inds for k in range(self.num_sites)]

    @property
    def bond_dims(self) -> list[int]:
        """Dimension of every bond after truncation."""
        if self._tn is None:
            return [int(a.shape[-1]) for a in self._arrays[:-1]]
        return [self._tn[f"I{k}"].ind_size(f"b{k}") for k in range(self.num_sites - 1)]

    @property
    def cut(self) -> str:
        """The chain as a cut string."""
        return format_cut(self.sites)

    def to_kernel(self) -> torch.Tensor:
        """Contract the chain to the dense kernel (input layout, dtype and device).

        Site by site from the left (plain matmuls; a network changed through :attr:`tn` goes
        through a cached opt_einsum expression); differentiable with respect to the site
        tensors.

        Examples
        --------
        >>> import torch, tnconv
        >>> w = torch.randn(8, 4, 3, 3)
        >>> tnconv.to_mps(w).to_kernel().shape
        torch.Size([8, 4, 3, 3])
        """
        arrays, inds = self.arrays, self.inds
        if inds != self._inds:  # the network was changed: contract by the index names
            w = contract(arrays, inds, self.physical_legs, shape=self.shape)
        else:
            w = arrays[0]
            for a in arrays[1:]:  # (sites so far, bond) @ (bond, site and next bond)
                w = w.reshape(-1, a.shape[0]) @ a.reshape(a.shape[0], -1)
            w = w.reshape(self._chain_sizes).permute(self._unpermute).reshape(self.shape)
        return w if w.dtype == self.out_dtype else w.to(self.out_dtype)

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


def check_sweeps(sweeps: object) -> int:
    """Validate ``sweeps=`` of :func:`tnconv.to_mps` (an int >= 0, not a bool).

    >>> check_sweeps(2)
    2
    """
    if isinstance(sweeps, bool) or not isinstance(sweeps, int):
        raise TypeError(f"sweeps must be an int >= 0, got {sweeps!r}")
    if sweeps < 0:
        raise ValueError(f"sweeps must be an int >= 0, got {sweeps}")
    return sweeps


def _ranks(chain: torch.Tensor, tol: float, crit: Criteria, full: list[int]
           ) -> tuple[list[int], list[torch.Tensor] | None, bool, TTSVD | None]:
    """Bond ranks from the criteria (before ``cutoff``, which acts on each step's spectrum),
    the cut spectra where ``max_error`` needed them, whether the ranks are those of an
    ends-first chain (:func:`tnconv.mps.ranks.ends_first`, fewer parameters than the TT-SVD's)
    and the errors-only TT-SVD that ``max_error`` ran (None without it)."""
    dims = tuple(int(d) for d in chain.shape)
    caps = list(full)
    if crit.max_bond is not None:
        caps = [min(c, crit.max_bond) for c in caps]
    if crit.keep is not None:
        caps = [min(c, math.ceil(crit.keep * f - 1e-9)) for c, f in zip(caps, full, strict=True)]
    caps = minimal_ranks(dims, caps)
    if crit.max_error is None:
        return caps, None, False, None
    tt = TTSVD(chain, tol, fast=True)
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
                return ends, spectra, True, tt
    return ranks, spectra, False, tt


def _extreme_scale(kernel: torch.Tensor) -> tuple[float, float]:
    """The kernel's norm where squared singular values would over- or underflow, else 1; and
    the norm."""
    norm = float(torch.linalg.vector_norm(kernel.detach(), dtype=torch.float64))
    if 1e-100 < norm < 1e100:  # a plain float64 norm in range: no scaling needed
        return 1.0, norm
    norm = frobenius_norm(kernel)
    return (norm if norm > 1e100 or 0.0 < norm < 1e-100 else 1.0), norm


def _scaled_criteria(crit: Criteria, scale: float) -> Criteria:
    """``crit`` for the kernel divided by ``scale``: absolute cutoffs scale with it."""
    if scale == 1.0 or crit.cutoff is None or str(crit.cutoff_mode).startswith("r"):
        return crit
    cutoff = crit.cutoff / scale
    return crit.replace(cutoff=cutoff / scale if crit.cutoff_mode == "sum2" else cutoff)


def _build(kernel: torch.Tensor, chain: torch.Tensor, crit: Criteria, sweeps: int,
           norm2: float | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor] | None,
                                                 list[float], float, float | None]:
    """The chain's cores ``(r_{k-1}, d_k, r_k)``, the cut spectra (if computed), the sweep
    errors, ``||chain||^2`` (``norm2`` where known) and, for a truncated TT-SVD, the squared
    weight it discarded (its squared error: orthogonal projections)."""
    dims = tuple(int(d) for d in chain.shape)
    full = [min(math.prod(dims[: k + 1]), math.prod(dims[k + 1:])) for k in range(len(dims) - 1)]
    tol = _ZERO_TOL[chain.dtype]
    ranks, spectra, ends, fast = full, None, False, None
    schmidt = None  # Schmidt values and vectors of the bonds where the TT-SVD gives them
    discarded = None
    if crit.active:
        with torch.no_grad():
            ranks, spectra, ends, fast = _ranks(chain.detach(), tol, crit, full)
    grad = kernel.requires_grad and torch.is_grad_enabled()
    tt = TTSVD(chain if grad else chain.detach(), tol,
               norm2=norm2 if fast is None else fast.norm2)
    if fast is not None and not grad:
        tt.adopt(fast)  # the steps both compute alike (large float32 ones)
    if ends:
        cores = ends_first_cores(chain if grad else chain.detach(), ranks)
    else:
        cut = None if crit.cutoff is None else Criteria(cutoff=crit.cutoff,
                                                        cutoff_mode=crit.cutoff_mode)

        def choose(k: int, s: torch.Tensor, tails: list[float]) -> int:
            return min(ranks[k], cut.rank(s))  # type: ignore[union-attr]

        used, discarded, cores = tt.run(ranks if cut is None else choose)
        schmidt = tt.schmidt(used)
    errors: list[float] = []
    limit = tol * math.sqrt(tt.norm2)
    if sweeps and len(cores) > 1:
        with torch.no_grad():
            start = left_canonical(canonical_minimal(cores, limit)[0])
            cores, errors = als_sweeps(chain, start, sweeps)
            cores = canonical_minimal(cores, limit)[0]
        return cores, spectra, errors, tt.norm2, None
    if crit.active:  # TT-SVD cores are left-orthonormal already (ends-first ones are not)
        cores, dropped = canonical_minimal(cores, limit, left_orthonormal=not ends,
                                           schmidt=schmidt)
        discarded = None if discarded is None else discarded + dropped
    return cores, spectra, errors, tt.norm2, discarded


def _error_from_weights(kernel: torch.Tensor, chain: torch.Tensor, norm2: float,
                        discarded: float | None) -> float | None:
    """``sqrt(discarded / norm2)``: the relative error of a truncated TT-SVD (an orthogonal
    projection), where ``chain`` is the kernel in its own dtype and the error is large enough
    for rounding to be negligible against it (:data:`_FROM_WEIGHTS`); else None."""
    if discarded is None or chain.dtype != kernel.dtype or not norm2 > 0:
        return None
    rel = math.sqrt(discarded / norm2)
    return rel if rel >= _FROM_WEIGHTS[chain.dtype] else None


def _measured_error(kernel: torch.Tensor, chain: torch.Tensor, norm2: float,
                    cores: list[torch.Tensor]) -> float | None:
    """``||W - W_mps|| / ||W||`` of the chain built at scale 1 from ``chain`` (the kernel in
    chain order, ``||chain||^2 = norm2``), measured on the dense chain cast to the kernel's
    dtype, as :meth:`KernelMPS.to_kernel` gives it (the difference in ``chain``'s dtype, its
    norm in float64); None where ``chain`` is not exactly the kernel (a narrower dtype)."""
    if torch.finfo(chain.dtype).bits < torch.finfo(kernel.dtype).bits:
        return None
    approx = chain_dense([c.detach() for c in cores])  # detached: no graph
    if kernel.dtype != chain.dtype:  # rounded to the kernel's dtype, as to_kernel gives it
        approx = approx.to(kernel.dtype).to(chain.dtype)
    diff = float(torch.linalg.vector_norm(approx - chain.detach(), dtype=torch.float64))
    if not math.isfinite(diff):
        return None
    norm = math.sqrt(norm2)
    return diff / norm if norm > 0 else diff


def decompose_chain(kernel: torch.Tensor, cut: CutSpec | None, crit: Criteria, *,
                    split: SplitSpec = None, dtype: torch.dtype | None = None,
                    sweeps: int = 0) -> KernelMPS:
    """TT-SVD of a kernel along one given chain: :func:`tnconv.to_mps` without ``cut="auto"``.

    ``cut`` names the chain (``None``: the default chain), ``crit`` holds the truncation
    criteria (built from :func:`tnconv.to_mps`'s keywords by
    :meth:`tnconv.decomp.Criteria.from_options`); the other parameters are
    :func:`tnconv.to_mps`'s. :mod:`tnconv.mps.order` searches leg orders with it, and
    :func:`tnconv.to_mps` calls it once the order is known.

    Examples
    --------
    >>> import torch
    >>> from tnconv.decomp import Criteria
    >>> crit = Criteria.from_options({"max_bond": 2})
    >>> decompose_chain(torch.randn(8, 4, 3, 3), "out|kh|kw|in", crit).bond_dims
    [2, 2, 2]
    """
    import_quimb()  # quimb is needed (for KernelMPS.tn): fail early without it
    if not isinstance(crit, Criteria):
        raise TypeError(f"crit must be a tnconv.decomp.Criteria, got {type(crit).__name__}")
    sweeps = check_sweeps(sweeps)
    lay = layout(kernel, split)
    if isinstance(cut, str) and cut.strip().lower() == "auto":
        raise ValueError("cut='auto' is resolved by tnconv.to_mps; decompose_chain takes a chain")
    if cut is None or isinstance(cut, str):  # parsed once per cut and layout
        sites = _parsed(cut, lay.legs, tuple((k, tuple(v)) for k, v in lay.split.items()))
    else:
        sites = parse_cut(cut, lay.legs, lay.split, min_groups=2)
    plan = _plan(sites, lay.physical_legs, lay.physical_shape)
    work = kernel.to(compute_dtype(kernel, dtype)).reshape(lay.physical_shape).permute(plan.order)
    work = work.reshape(plan.dims)
    scale, norm = _extreme_scale(kernel)
    known = norm**2 if scale == 1.0 and work.dtype == kernel.dtype else None
    cores, spectra, errors, norm2, discarded = _build(
        kernel, work / scale if scale != 1.0 else work, _scaled_criteria(crit, scale), sweeps,
        known)
    if scale != 1.0:  # squares of singular values would over- or underflow: built at norm 1
        cores = [cores[0] * scale, *cores[1:]]
        spectra = None if spectra is None else [s * scale for s in spectra]
    err = None  # measured by KernelMPS at full scale
    if scale == 1.0:
        err = _error_from_weights(kernel, work, norm2, discarded)
        err = _measured_error(kernel, work, norm2, cores) if err is None else err
    arrays = []
    for k, core in enumerate(cores):  # (left bond, site legs, right bond), no end bonds
        shape = (((core.shape[0],) if k else ()) + plan.sizes[k]
                 + ((core.shape[-1],) if k < len(cores) - 1 else ()))
        data = core if core.shape == shape else core.reshape(shape)
        if errors and kernel.requires_grad:  # after sweeps: the site tensors are the leaves
            data = data.detach().requires_grad_(True)
        arrays.append(data)
    return KernelMPS(arrays, sites, lay, kernel.dtype, work,
                     None if crit.max_error is None else float(crit.max_error), kernel,
                     spectra=spectra, sweep_errors=errors, rel_error=err)
