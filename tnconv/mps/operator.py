"""Kernels as matrix product operators (tensor-train matrices): :func:`to_mpo` -> KernelMPO.

The quantum-inspired form of a layer (Novikov et al. 2015 for fully connected layers, Garipov
et al. 2016 for convolutions): the channel legs are factored into sub-legs, ``out = (out0, ...,
out{n-1})`` and ``in = (in0, ..., in{n-1})`` (row-major, as :mod:`tnconv.legs` splits them),
and the weight becomes a chain with **one site per pair** ``(out_k, in_k)``::

    Linear [out, in]            (out0,in0) - (out1,in1) - ... - (out{n-1},in{n-1})
    Conv2d [out, in, kh, kw]    (kh,kw) - (out0,in0) - ... - (out{n-1},in{n-1})

**The spatial legs get a core of their own, first** (Garipov's layout), rather than joining
the first pair: its bond ``b0`` has at most ``kh * kw`` directions, so the core is tiny and
costs almost nothing to keep exact; the forward pass applies it as one convolution with ``b0``
filters per input channel and is then left with the same channel contraction as a Linear
layer (:class:`tnconv.layers.MPOConv2d`). Joined to the first pair, the spatial legs would
make that site ``kh * kw`` times larger and mix the convolution into the channel cores. A 1x1
convolution has no spatial core (its unit legs join the first pair).

The decomposition is the TT-SVD of :func:`tnconv.to_mps` along that chain (the same criteria,
``max_error`` spent over the whole chain, minimal bonds, ALS ``sweeps``); :class:`KernelMPO`
holds the cores in one layout, ``(left bond, out_k, in_k, right bond)`` (no bond at the ends),
unit sub-legs included, and the bond spectra and entropies of the chain.

Examples
--------
>>> import torch, tnconv
>>> mpo = tnconv.to_mpo(torch.randn(64, 32, 3, 3), max_bond=6)
>>> mpo.out_shape, mpo.in_shape, mpo.bond_dims
((8, 8), (8, 4), [6, 6])
>>> [tuple(c.shape) for c in mpo.cores]
[(3, 3, 6), (6, 8, 8, 6), (6, 8, 4)]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from typing_extensions import Unpack

from ..contraction import contract
from ..decomp import Criteria, CriteriaOptions, check_positive_int, check_ratio
from ..factors import KernelFactors
from ..legs import balanced_factors, validate_kernel
from ..network import import_quimb
from ..spectra import entropy
from .als import chain_params
from .chain import KernelMPS, check_sweeps, decompose_chain
from .ranks import minimal_ranks

__all__ = ["KernelMPO", "bond_for_ratio", "mpo_shapes", "to_mpo"]

Shape = tuple[int, ...]


def _check_shape(name: str, shape: object, total: int, what: str) -> Shape:
    if (isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence)
            or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)):
        raise TypeError(f"{name} must be a sequence of ints (sub-leg sizes), got {shape!r}")
    shape = tuple(int(d) for d in shape)
    if not shape or any(d < 1 for d in shape):
        raise ValueError(f"{name} sub-legs must all be >= 1, got {shape}")
    if math.prod(shape) != total:
        raise ValueError(f"{name} {shape} has product {math.prod(shape)}, but the kernel has "
                         f"{total} {what}")
    return shape


def _auto_pairs(c_in: int, c_out: int) -> int:
    """About 8 per sub-leg, at least 2 pairs, fewer where a pair would have no legs."""
    n = max(2, min(8, round(math.log(max(c_in, c_out, 2), 8))))
    while n > 1 and any(o * i == 1 for o, i in zip(balanced_factors(c_out, n),
                                                   balanced_factors(c_in, n), strict=True)):
        n -= 1
    return n


def mpo_shapes(in_features: int, out_features: int, *, in_shape: Sequence[int] | None = None,
               out_shape: Sequence[int] | None = None, pairs: int | None = None
               ) -> tuple[Shape, Shape]:
    """The sub-leg sizes ``(in_shape, out_shape)`` of an MPO, given or balanced.

    Parameters
    ----------
    in_features, out_features
        The channel counts.
    in_shape, out_shape
        Given sub-leg sizes (products ``in_features`` and ``out_features``); None: balanced
        (:func:`tnconv.legs.balanced_factors`) over as many pairs as the other one has, or as
        ``pairs``, or about 8 per sub-leg (at least 2 pairs).
    pairs
        The number of ``(out_k, in_k)`` pairs.

    Raises
    ------
    TypeError, ValueError
        Shapes that are not int sequences, sub-legs < 1, products that are not the channel
        counts, shapes of different lengths, or a pair whose two sub-legs are both 1.

    Examples
    --------
    >>> mpo_shapes(4096, 4096), mpo_shapes(3, 64, pairs=3)
    (((8, 8, 8, 8), (8, 8, 8, 8)), ((3, 1, 1), (4, 4, 4)))
    """
    if pairs is not None:
        pairs = check_positive_int("pairs", pairs)
    if in_shape is not None:
        in_shape = _check_shape("in_shape", in_shape, in_features, "input channels")
    if out_shape is not None:
        out_shape = _check_shape("out_shape", out_shape, out_features, "output channels")
    lengths = {len(s) for s in (in_shape, out_shape) if s is not None}
    if pairs is not None:
        lengths.add(pairs)
    if len(lengths) > 1:
        raise ValueError(f"in_shape {in_shape}, out_shape {out_shape} and pairs={pairs} must "
                         "give one number of sub-leg pairs")
    n = lengths.pop() if lengths else _auto_pairs(in_features, out_features)
    in_shape = in_shape or balanced_factors(in_features, n)
    out_shape = out_shape or balanced_factors(out_features, n)
    empty = [k for k, (o, i) in enumerate(zip(out_shape, in_shape, strict=True)) if o * i == 1]
    if empty:
        raise ValueError(f"pair {empty[0]} of out_shape {out_shape} and in_shape {in_shape} "
                         "has two sub-legs of size 1; use fewer pairs")
    return in_shape, out_shape


def bond_for_ratio(dims: Sequence[int], ratio: float) -> int:
    """Largest uniform bond cap whose chain of site sizes ``dims`` has at most
    ``prod(dims) / ratio`` parameters (1 where none has).

    Examples
    --------
    >>> bond_for_ratio([9, 64, 64], 10.0)  # 9*7 + 7*64*7 + 7*64 <= 9*64*64 / 10
    7
    """
    ratio = check_ratio(ratio)  # type: ignore[assignment]
    dims = [int(d) for d in dims]
    budget = math.prod(dims) / ratio
    lo, hi, best = 1, max(1, math.prod(dims)), 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if chain_params(dims, minimal_ranks(dims, [mid] * (len(dims) - 1))) <= budget:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def _leg_names(leg: str, shape: Shape) -> list[str | None]:
    """The :mod:`tnconv.legs` name of each sub-leg of ``leg`` (None for the unit ones)."""
    big = [k for k, d in enumerate(shape) if d > 1]
    names: list[str | None] = [None] * len(shape)
    for j, k in enumerate(big):
        names[k] = leg if len(big) == 1 else f"{leg}{j}"
    return names


def _sites(in_shape: Shape, out_shape: Shape, spatial: bool, conv: bool
           ) -> list[list[str]]:
    """The chain's sites in :mod:`tnconv.legs` names: unit sub-legs dropped, a leg of size 1
    (and the unit spatial legs of a 1x1 kernel) on the first pair."""
    outs, ins = _leg_names("out", out_shape), _leg_names("in", in_shape)
    pairs = [[x for x in (o, i) if x is not None] for o, i in zip(outs, ins, strict=True)]
    pairs[0] = ([] if any(outs) else ["out"]) + pairs[0] + ([] if any(ins) else ["in"])
    if conv and not spatial:
        pairs[0] += ["kh", "kw"]
    return ([["kh", "kw"]] if spatial else []) + pairs


class KernelMPO(KernelFactors):
    """A kernel as a matrix product operator (returned by :func:`to_mpo`).

    Attributes
    ----------
    cores : list of torch.Tensor
        One per site: the spatial core ``(kh, kw, b0)`` of a convolution first, then one per
        pair ``(b_{k-1}, out_k, in_k, b_k)`` (no bond at the ends; unit sub-legs kept).
    inds : list of tuple of str
        Index names of each core: ``kh, kw``, ``out{k}``, ``in{k}``, bonds ``b{k}``.
    in_shape, out_shape : tuple of int
        The sub-leg sizes (products: the input and output channels).
    spatial : bool
        Whether there is a spatial core (a convolution with ``kh * kw > 1``).
    physical_legs : tuple of str
        The open indices: ``out0.., in0..`` (and ``kh, kw`` with a spatial core).
    mps : KernelMPS
        The underlying chain (its sites in :mod:`tnconv.legs` names).
    rel_error, error_bound, bond_spectra
        As :class:`tnconv.KernelMPS`: the relative error reached, the ``max_error`` asked
        for, the singular values of every bond's bipartition of the original kernel.
    """

    kind = "mpo"

    def __init__(self, mps: KernelMPS, in_shape: Shape, out_shape: Shape, spatial: bool) -> None:
        self.mps, self.in_shape, self.out_shape, self.spatial = mps, in_shape, out_shape, spatial
        self.shape = tuple(mps.shape)
        self.out_dtype, self.error_bound, self.rel_error = (mps.out_dtype, mps.error_bound,
                                                            mps.rel_error)
        n = len(in_shape)
        self.physical_legs: tuple[str, ...] = (
            *(f"out{k}" for k in range(n)), *(f"in{k}" for k in range(n)),
            *(("kh", "kw") if spatial else ()))
        mids: list[tuple[tuple[str, int], ...]] = [
            (("kh", self.shape[2]), ("kw", self.shape[3]))] if spatial else []
        mids += [((f"out{k}", out_shape[k]), (f"in{k}", in_shape[k])) for k in range(n)]
        last = len(mids) - 1
        self._cores, self._inds = [], []
        for s, (a, mid) in enumerate(zip(mps.arrays, mids, strict=True)):
            left = ((f"b{s - 1}", int(a.shape[0])),) if s else ()
            right = ((f"b{s}", int(a.shape[-1])),) if s < last else ()
            legs = (*left, *mid, *right)
            self._cores.append(a.reshape(tuple(d for _, d in legs)))
            self._inds.append(tuple(name for name, _ in legs))

    @property
    def cores(self) -> list[torch.Tensor]:
        """The cores, matching :attr:`inds` (compute dtype; differentiable views)."""
        return list(self._cores)

    @property
    def arrays(self) -> list[torch.Tensor]:
        """The cores (:class:`tnconv.factors.KernelFactors`'s name)."""
        return self.cores

    @property
    def factors(self) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        """The cores as a tuple."""
        return tuple(self._cores)

    @property
    def inds(self) -> list[tuple[str, ...]]:  # type: ignore[override]
        """Index names of each core."""
        return list(self._inds)

    @property
    def legs(self) -> tuple[str, ...]:  # type: ignore[override]
        """The kernel's legs: ``out, in`` (and ``kh, kw``)."""
        return self.mps.legs

    @property
    def sites(self) -> tuple[tuple[str, ...], ...]:
        """The open indices of each core."""
        return tuple(tuple(i for i in ix if not i.startswith("b")) for ix in self._inds)

    @property
    def cut(self) -> str:
        """The chain as a cut string, e.g. ``"kh,kw|out0,in0|out1,in1"``."""
        return "|".join(",".join(site) for site in self.sites)

    @property
    def bond_dims(self) -> list[int]:
        """Dimension of every bond ``b0, b1, ...``."""
        return self.mps.bond_dims

    @property
    def full_bond_dims(self) -> list[int]:
        """Rank of every bond's bipartition without truncation."""
        return self.mps.full_bond_dims

    @property
    def bond_spectra(self) -> list[torch.Tensor]:
        """Singular values of every bond's bipartition of the original kernel (computed on
        first access)."""
        return self.mps.bond_spectra

    def bond_entropies(self, *, alpha: float = 1.0, base: float = 2.0) -> list[float]:
        """Entanglement entropy of the original kernel at every bond (:attr:`bond_spectra`).

        Examples
        --------
        >>> import torch, tnconv
        >>> len(tnconv.to_mpo(torch.randn(16, 16), max_bond=2).bond_entropies())
        1
        """
        return [float(entropy(s, alpha=alpha, base=base)) for s in self.bond_spectra]

    @property
    def tn(self) -> Any:
        """The cores as a labelled ``quimb.tensor.TensorNetwork`` (tags ``I0, I1, ...``)."""
        qtn = import_quimb()
        return qtn.TensorNetwork([qtn.Tensor(c, inds=ix, tags={f"I{k}"})
                                  for k, (c, ix) in enumerate(zip(self._cores, self._inds,
                                                                  strict=True))])

    def to_kernel(self) -> torch.Tensor:
        """Contract the cores to the dense kernel (input shape, dtype and device).

        Examples
        --------
        >>> import torch, tnconv
        >>> tnconv.to_mpo(torch.randn(8, 4, 3, 3)).to_kernel().shape
        torch.Size([8, 4, 3, 3])
        """
        w = contract(self._cores, self._inds, self.physical_legs, shape=self.shape)
        return w if w.dtype == self.out_dtype else w.to(self.out_dtype)

    def _ranks(self) -> dict[str, Any]:
        return {"in_shape": self.in_shape, "out_shape": self.out_shape,
                "bond_dims": self.bond_dims}


def to_mpo(
    kernel: torch.Tensor,
    *,
    in_shape: Sequence[int] | None = None,
    out_shape: Sequence[int] | None = None,
    pairs: int | None = None,
    ratio: float | None = None,
    dtype: torch.dtype | None = None,
    sweeps: int = 0,
    **criteria: Unpack[CriteriaOptions],
) -> KernelMPO:
    """Decompose a Linear or Conv2d weight into a matrix product operator.

    Parameters
    ----------
    kernel
        A Linear ``[out, in]`` or Conv2d ``[out, in, kh, kw]`` weight (not modified).
    in_shape, out_shape, pairs
        The sub-leg sizes of the channels and their number (:func:`mpo_shapes`: balanced
        where not given, about 8 per sub-leg).
    max_bond, keep, max_error, cutoff, cutoff_mode
        Truncation criteria of :func:`tnconv.to_mps` (``max_error`` bounds the relative error
        of the whole chain). With none, the MPO is exact.
    ratio
        Target compression ``dense / MPO`` parameters (> 1): the largest uniform ``max_bond``
        within that budget (:func:`bond_for_ratio`; the smaller one wins with ``max_bond``).
    dtype, sweeps
        Compute dtype and ALS sweeps, as :func:`tnconv.to_mps`.

    Returns
    -------
    KernelMPO
        Cores, bond dimensions and spectra, parameter count, errors, ``to_kernel()``.

    Raises
    ------
    TypeError, ValueError
        A kernel that is not a 2-D or 4-D float tensor, bad shapes (see :func:`mpo_shapes`),
        fewer than two sites, bad criteria, ratio or sweeps.

    Examples
    --------
    >>> import torch, tnconv
    >>> w = torch.randn(256, 128)
    >>> mpo = tnconv.to_mpo(w, in_shape=(8, 4, 4), out_shape=(8, 8, 4), max_bond=8)
    >>> mpo.cut, mpo.bond_dims
    ('out0,in0|out1,in1|out2,in2', [8, 8])
    >>> tnconv.to_mpo(w, max_error=0.5).rel_error <= 0.5
    True
    """
    crit = Criteria.from_options(dict(criteria))  # validated before any work
    ratio, sweeps = check_ratio(ratio), check_sweeps(sweeps)
    kernel = validate_kernel(kernel)
    if kernel.dim() not in (2, 4):
        raise ValueError("kernel must be a 2-D Linear weight [out, in] or a 4-D Conv2d weight "
                         f"[out, in, kh, kw], got shape {tuple(kernel.shape)}")
    c_out, c_in = int(kernel.shape[0]), int(kernel.shape[1])
    ins, outs = mpo_shapes(c_in, c_out, in_shape=in_shape, out_shape=out_shape, pairs=pairs)
    conv = kernel.dim() == 4
    spatial = conv and int(kernel.shape[2]) * int(kernel.shape[3]) > 1
    sites = _sites(ins, outs, spatial, conv)
    if len(sites) < 2:
        what = "a 1x1 kernel" if conv else "a Linear weight"
        raise ValueError(f"an MPO needs at least two sites: {what} needs at least 2 sub-leg "
                         f"pairs, got in_shape {ins} and out_shape {outs}")
    if ratio is not None:
        dims = ([int(kernel.shape[2]) * int(kernel.shape[3])] if spatial else []) + [
            o * i for o, i in zip(outs, ins, strict=True)]
        cap = bond_for_ratio(dims, ratio)
        crit = crit.replace(max_bond=cap if crit.max_bond is None else min(cap, crit.max_bond))
    mps = decompose_chain(kernel, "|".join(",".join(s) for s in sites), crit,
                          split={"out": outs, "in": ins}, dtype=dtype, sweeps=sweeps)
    return KernelMPO(mps, ins, outs, spatial)
