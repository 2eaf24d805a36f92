"""Kernels as matrix product states (tensor trains) along a chain of sites.

:func:`to_mps` turns a kernel into a chain such as ``"out|kh|kw|in"``: one site per group of
legs, bonds ``b0, b1, ...`` between neighbouring sites. It works on the labelled quimb network
of :func:`tnconv.kernel_tn`, by network operations only:

1. **split** -- left to right, the remaining tensor is split by an exact SVD into the next
   site (an isometry) and the rest; the singular values at bond ``k`` are then exactly the
   spectrum of the bipartition "sites ``0..k`` | sites ``k+1..``", recorded as
   :attr:`KernelMPS.bond_spectra`;
2. **compress** -- right to left, each bond is truncated by an SVD of the site at the
   orthogonality centre, the discarded part moving into the left neighbour.

Both sweeps run in torch (on the kernel's device, with autograd); quimb holds the tensors, their
labels and tags. For a chain, ``max_error`` bounds the relative error of the *whole* chain:
every one of the ``n - 1`` bonds may discard at most ``max_error / sqrt(n - 1)`` (relative to
``||W||``), and since the discarded parts are orthogonal in canonical form, the squared errors
add up: ``||W - W_mps|| <= max_error * ||W||`` (the TT-SVD bound). The other criteria
(``max_bond``, ``keep`` of each bond's full rank, ``cutoff``) apply bond by bond, and the
smallest rank wins (:class:`tnconv.decomp.Criteria`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from typing_extensions import Unpack

from .contract import contract
from .cuts import CutSpec, default_chain, format_cut, parse_cut
from .decomp import Criteria, CriteriaOptions, frobenius_norm, svd
from .factors import KernelFactors
from .legs import SplitSpec
from .network import compute_dtype, import_quimb, layout

__all__ = ["to_mps", "KernelMPS"]


def _svd_split(
    t: Any, left_inds: tuple[str, ...], bond: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """SVD of a quimb tensor across ``left_inds | rest``: returns U, s, Vh and the right inds."""
    right_inds = tuple(i for i in t.inds if i not in left_inds)
    data = t.data.permute([t.inds.index(i) for i in (*left_inds, *right_inds)])
    lshape = [t.ind_size(i) for i in left_inds]
    rshape = [t.ind_size(i) for i in right_inds]
    u, s, vh = svd(data.reshape(math.prod(lshape), math.prod(rshape)))
    return u.reshape(*lshape, -1), s, vh.reshape(-1, *rshape), right_inds


def _truncate_bond(tn: Any, k: int, criteria: Criteria, norm: float, full_rank: int) -> None:
    """Truncate bond ``b{k}`` by an SVD of site ``k + 1`` (the orthogonality centre); the
    discarded part's complement moves into site ``k``."""
    right_t = tn[f"I{k + 1}"]
    u, s, vh, rinds = _svd_split(right_t, (f"b{k}",), f"b{k}")
    r = min(criteria.rank(s, norm=norm, full_rank=full_rank), int(s.numel()))
    u2, s2, vh2 = u.reshape(-1, s.numel())[:, :r], s[:r], vh[:r]
    right_t.modify(data=vh2, inds=(f"b{k}", *rinds))
    left_t = tn[f"I{k}"]
    lin = left_t.inds
    data = torch.tensordot(left_t.data, u2 * s2, dims=([lin.index(f"b{k}")], [0]))
    order = [i for i in lin if i != f"b{k}"] + [f"b{k}"]
    left_t.modify(data=data.permute([order.index(i) for i in lin]), inds=lin)


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
        Singular values at every bond before truncation (exactly the spectra of the
        bipartitions ``sites[:k+1] | sites[k+1:]``).
    error_bound : float or None
        The bound on the relative error that ``max_error`` guarantees (None without it).
    rel_error : float
        Relative error ``||W - W_mps||_F / ||W||_F`` actually reached (measured).
    """

    kind = "mps"

    def __init__(self, tn: Any, sites: tuple[tuple[str, ...], ...], lay: Any,
                 out_dtype: torch.dtype, bond_spectra: list[torch.Tensor],
                 error_bound: float | None, kernel: torch.Tensor) -> None:
        self.tn = tn
        self.sites = sites
        self.split = dict(lay.split)
        self.physical_legs = lay.physical_legs
        self.out_dtype = out_dtype
        self.bond_spectra = bond_spectra
        self.kernel_legs = lay.legs
        super().__init__(self.arrays, kernel, error_bound)

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
            "full_bond_dims": [int(s.numel()) for s in self.bond_spectra],
            "num_params": self.num_params,
            "dense_params": self.dense_params,
            "compression_ratio": self.compression_ratio,
            "rel_error": self.rel_error,
            "error_bound": self.error_bound,
        }

    def __repr__(self) -> str:
        return (f"KernelMPS(cut={self.cut!r}, shape={self.shape}, bond_dims={self.bond_dims}, "
                f"compression={self.compression_ratio:.2f}x, rel_error={self.rel_error:.3g})")


def to_mps(
    kernel: torch.Tensor,
    cut: CutSpec | None = None,
    *,
    split: SplitSpec = None,
    dtype: torch.dtype | None = None,
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
    max_bond, keep, max_error, cutoff, cutoff_mode
        Truncation criteria (see :mod:`tnconv.truncate`). ``max_bond``, ``keep`` (fraction of
        each bond's full rank) and ``cutoff`` act per bond; ``max_error`` bounds the relative
        error of the whole chain. With none, the chain is exact.
    split
        Factor legs into sub-legs first: ``{"out": (4, 4, 4)}``, ``"binary"`` or ``"prime"``.
    dtype
        Compute dtype (float32 at least; float64 when asked).

    Returns
    -------
    KernelMPS
        The chain: quimb network, bond spectra, bond dimensions, parameter count,
        compression ratio, error bound and measured error, ``to_kernel()``.

    Raises
    ------
    TypeError, ValueError
        Bad kernel, cut, split or criteria.

    Examples
    --------
    >>> import torch, tnconv
    >>> w = torch.randn(64, 32, 3, 3)
    >>> mps = tnconv.to_mps(w, "out|kh|kw|in", max_bond=8)
    >>> mps.bond_dims
    [8, 8, 8]
    >>> mps.to_kernel().shape
    torch.Size([64, 32, 3, 3])
    """
    qtn = import_quimb()
    crit = Criteria.from_options(criteria)
    max_error = crit.max_error
    lay = layout(kernel, split)
    chain = default_chain(lay.legs, lay.split) if cut is None else cut
    sites = parse_cut(chain, lay.legs, lay.split, min_groups=2)
    n = len(sites)
    work = kernel.to(compute_dtype(kernel, dtype)).reshape(lay.physical_shape)
    norm = frobenius_norm(kernel)
    tn = qtn.TensorNetwork([qtn.Tensor(work, inds=lay.physical_legs, tags={"REST"})])

    # 1. split: exact left-canonical chain; the bond spectra are the cut spectra.
    spectra: list[torch.Tensor] = []
    for k in range(n - 1):
        (rest,) = tn.select_tensors("REST")
        left = ((f"b{k - 1}",) if k else ()) + sites[k]
        u, s, vh, right = _svd_split(rest, left, f"b{k}")
        tn.delete("REST")
        tn.add_tensor(qtn.Tensor(u, inds=(*left, f"b{k}"), tags={f"I{k}", "SITE"}))
        sv = s.reshape(-1, *([1] * len(right)))
        tn.add_tensor(qtn.Tensor(sv * vh, inds=(f"b{k}", *right), tags={"REST"}))
        spectra.append(s.detach())
    (last,) = tn.select_tensors("REST")
    last.retag_({"REST": f"I{n - 1}"})
    last.add_tag("SITE")
    last.transpose_(f"b{n - 2}", *sites[n - 1])

    # 2. compress: right to left, truncating each bond at the orthogonality centre.
    if crit.active:
        per_bond = crit.replace(
            max_error=None if max_error is None else max_error / math.sqrt(n - 1))
        for k in range(n - 2, -1, -1):
            _truncate_bond(tn, k, per_bond, norm, full_rank=int(spectra[k].numel()))
    bound = None if max_error is None else float(max_error)
    return KernelMPS(tn, sites, lay, kernel.dtype, spectra, bound, kernel)
