"""MPS (tensor-train) convolutions: the kernel as a trainable chain of cores.

:meth:`MPSConv2d.from_conv` decomposes a convolution's kernel with :func:`tnconv.to_mps` (an
SVD sweep, run once, outside autograd) and keeps the site tensors as parameters. Every forward
pass contracts them back to the kernel through a cached opt_einsum expression, so training
never differentiates through an SVD: gradients stay finite for rank-deficient kernels.

For a chain ``in | spatial sites | out`` (the default ``"out|kh|kw|in"``, ungrouped, no
sub-legs) the cores can also be applied as a sequence of small convolutions: ``1x1
(in -> r3)``, ``1 x kw (r3 -> r2)``, ``kh x 1 (r2 -> r1)``, ``1x1 (r1 -> out)``. So can every
two-site cut (one bond ``r``; either site order, any leg order within a site), the site with
``in`` first:

* ``"out|in,kh,kw"``: ``kh x kw (in -> r)``, then ``1x1 (r -> out)``;
* ``"out,kh,kw|in"``: ``1x1 (in -> r)``, then ``kh x kw (r -> out)``;
* ``"out,kh|in,kw"``: ``1 x kw (in -> r)``, then ``kh x 1 (r -> out)`` (Jaderberg et al. 2014);
* ``"out,kw|in,kh"``: ``kh x 1 (in -> r)``, then ``1 x kw (r -> out)``.

Stride, dilation and padding act on the axes each step convolves over; non-zero padding modes
and asymmetric padding are applied to the input up front, so the steps reproduce ``F.conv2d``
of the dense kernel exactly (grouped convolutions take the dense path).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..cuts import CutSpec, default_chain, parse_cut
from ..decomp import check_positive_int, check_ratio
from ..legs import SplitSpec
from ..mps import KernelMPS, cut_spectra, to_mps
from ..network import layout
from ..spectra import entropy
from .balance import balance_factors
from .base import FactorizedConv2d, FactorStep

__all__ = ["MPSConv2d"]

_DEFAULT_CUT = "out|kh|kw|in"


def _chain_params(phys: list[int], bonds: list[int]) -> int:
    total = 0
    for k, p in enumerate(phys):
        left = bonds[k - 1] if k else 1
        right = bonds[k] if k < len(bonds) else 1
        total += left * p * right
    return total


def _max_bond_for_ratio(phys: list[int], ratio: float) -> int:
    """Largest uniform bond cap whose chain has at most ``prod(phys) / ratio`` parameters."""
    full = [min(math.prod(phys[: k + 1]), math.prod(phys[k + 1:])) for k in range(len(phys) - 1)]
    budget = math.prod(phys) / ratio
    best = 1
    lo, hi = 1, max(full)
    while lo <= hi:
        mid = (lo + hi) // 2
        if _chain_params(phys, [min(f, mid) for f in full]) <= budget:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


class MPSConv2d(FactorizedConv2d):
    """A ``Conv2d`` whose kernel is a matrix product state along a chain of legs.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode
        As :class:`torch.nn.Conv2d` (``padding`` may be ``"same"`` or ``"valid"``); grouped
        kernels ``[out, in/groups, kh, kw]`` are factored as they are.
    cut
        Keyword-only, as all the options below (:meth:`decompose` takes them). The chain,
        e.g. ``"out|kh|kw|in"`` (default) or ``"out,kh|kw|in"``; ``None``: the
        default chain of :func:`tnconv.to_mps` (one site per sub-leg with ``split``).
    max_bond, keep, max_error, cutoff, cutoff_mode
        Truncation criteria of :func:`tnconv.to_mps`. With none, the chain is exact.
    ratio
        Target compression ``dense / factored`` parameters: the largest uniform ``max_bond``
        within that budget (combined with the other criteria; the smallest rank wins).
    split
        Factor legs into sub-legs first (``{"out": (4, 4, 4)}``, ``"binary"``, ``"prime"``).
    path
        ``"auto"`` (by a FLOP estimate per input shape), ``"dense"`` or ``"factored"``.
    device, dtype
        Where the cores live. A fresh layer factors PyTorch's default initialisation.

    Attributes
    ----------
    cores : nn.ParameterList
        Site tensors; axes (left bond, the site's legs, right bond) as in
        :attr:`tnconv.KernelMPS.arrays`.
    sites, inds, bond_dims
        Legs of each site, index names of each core, bond dimensions.
    bond_spectra, rel_error
        Diagnostics of the last decomposition (``from_conv`` or :meth:`recompress`): the
        singular values at every bond before truncation (on the device of that moment) and the
        relative error against the kernel then factored. Training and ``load_state_dict`` do
        not update them; :func:`tnconv.layers.bond_entropies` reads the current cores.

    Examples
    --------
    >>> import torch, tnconv
    >>> conv = torch.nn.Conv2d(16, 32, 3, padding=1)
    >>> layer = tnconv.MPSConv2d.from_conv(conv, max_bond=8)
    >>> layer.bond_dims, layer(torch.randn(2, 16, 8, 8)).shape
    ([8, 8, 8], torch.Size([2, 32, 8, 8]))
    """

    kind = "mps"

    @classmethod
    def decompose(
        cls,
        kernel: torch.Tensor,
        cut: CutSpec | None = _DEFAULT_CUT,
        *,
        ratio: float | None = None,
        split: SplitSpec = None,
        **criteria: Any,
    ) -> KernelMPS:
        """:func:`tnconv.to_mps` of ``kernel`` along ``cut``, with ``ratio`` as a bond cap.

        Parameters
        ----------
        kernel
            The dense kernel (not modified).
        cut, split
            The chain and the sub-leg factoring (see :func:`tnconv.to_mps`).
        ratio
            Target compression ``dense / factored`` (> 1): the largest uniform ``max_bond``
            within that budget (the smaller one wins where ``max_bond`` is given too).
        **criteria
            ``max_bond``, ``keep``, ``max_error``, ``cutoff``, ``cutoff_mode`` of
            :func:`tnconv.to_mps`.

        Examples
        --------
        >>> import torch
        >>> MPSConv2d.decompose(torch.randn(16, 16, 3, 3), ratio=4.0).bond_dims
        [7, 7, 7]
        """
        ratio = check_ratio(ratio)
        if ratio is not None:
            lay = layout(kernel, split)
            chain = default_chain(lay.legs, lay.split) if cut is None else cut
            sites = parse_cut(chain, lay.legs, lay.split, min_groups=2)
            cap = _max_bond_for_ratio(
                [math.prod(lay.sizes[leg] for leg in site) for site in sites], ratio)
            given = criteria.get("max_bond")
            criteria["max_bond"] = cap if given is None else min(
                check_positive_int("max_bond", given), cap)
        return to_mps(kernel, cut, split=split, **criteria)

    def _set_factors(self, decomposition: KernelMPS) -> None:
        mps = decomposition
        self.cores = nn.ParameterList(
            [nn.Parameter(a.detach().to(mps.out_dtype).contiguous().clone()) for a in mps.arrays])
        self.inds: list[tuple[str, ...]] = [tuple(ix) for ix in mps.inds]
        self.sites: tuple[tuple[str, ...], ...] = tuple(tuple(s) for s in mps.sites)
        self.physical_legs: tuple[str, ...] = tuple(mps.physical_legs)
        self.split: dict[str, tuple[int, ...]] = dict(mps.split)
        # the cut spectra are computed on first access of ``bond_spectra`` (full SVDs of every
        # cut: too slow for every from_conv); until then the layer keeps the chain-ordered kernel
        self._bond_spectra: list[torch.Tensor] | None = None
        self._spectra_chain: torch.Tensor | None = mps.chain
        self._path_cache.clear()

    @property
    def bond_spectra(self) -> list[torch.Tensor]:
        """Singular values at every bond of the kernel last decomposed, before truncation.

        Computed on first access (then the copy of that kernel is released).
        """
        if self._bond_spectra is None:
            chain = self._spectra_chain
            self._bond_spectra = [] if chain is None else cut_spectra(chain)
            self._spectra_chain = None
        return self._bond_spectra

    @bond_spectra.setter
    def bond_spectra(self, spectra: list[torch.Tensor]) -> None:
        self._bond_spectra, self._spectra_chain = list(spectra), None

    @property
    def cut(self) -> str:
        """The chain as a cut string."""
        return "|".join(",".join(s) for s in self.sites)

    @property
    def bond_dims(self) -> list[int]:
        """Bond dimensions ``b0, b1, ...``."""
        return [int(self.cores[k].shape[-1]) for k in range(len(self.cores) - 1)]

    @property
    def tn(self) -> Any:
        """The cores as a quimb ``TensorNetwork`` (tags ``I0, I1, ...``; data: the parameters)."""
        import quimb.tensor as qtn

        return qtn.TensorNetwork([qtn.Tensor(c, inds=ix, tags={f"I{k}"})
                                  for k, (c, ix)
                                  in enumerate(zip(self.cores, self.inds, strict=True))])

    def _kernel_network(
        self,
    ) -> tuple[list[torch.Tensor], list[tuple[str, ...]], tuple[str, ...]]:
        return list(self.cores), self.inds, self.physical_legs

    def _factor_steps(self) -> list[FactorStep] | None:
        """The chain as convolutions, from the site with ``in`` to the site with ``out``.

        Each core becomes one convolution ``[next bond (or out), previous bond (or in), kh?,
        kw?]`` over the spatial legs of its site (1 on the others). Taken for ungrouped chains
        without sub-legs whose ends hold ``in`` and ``out``: two-site cuts with any spatial
        legs on either side (``"out|in,kh,kw"``, ``"out,kh|in,kw"``, ...), longer chains
        ``out | spatial sites | in`` (either direction).
        """
        n = len(self.sites)
        if self.groups != 1 or self.split or n < 2:
            return None
        first, last = self.sites[0], self.sites[-1]
        if "in" in first and "out" in last:
            order = list(range(n))
        elif "out" in first and "in" in last:
            order = list(range(n - 1, -1, -1))
        else:
            return None
        if n > 2 and {first, last} != {("out",), ("in",)}:
            return None  # spatial legs at the ends of longer chains: not (yet) a factored path
        steps: list[FactorStep] = []
        c_in = "in"
        for j, k in enumerate(order):
            ix = self.inds[k]
            if j == n - 1:
                c_out = "out"
            else:
                shared = [i for i in ix if i in self.inds[order[j + 1]]]
                if len(shared) != 1:
                    return None
                c_out = shared[0]
            legs = [leg for leg in ("kh", "kw") if leg in self.sites[k]]
            names = (c_out, c_in, *legs)
            if len(ix) != len(names) or any(i not in ix for i in names):
                return None
            t = self.cores[k].permute([ix.index(i) for i in names])
            kh = self.kernel_size[0] if "kh" in legs else 1
            kw = self.kernel_size[1] if "kw" in legs else 1
            axes = ("h" if "kh" in legs else "") + ("w" if "kw" in legs else "")
            steps.append(FactorStep(t.reshape(t.shape[0], t.shape[1], kh, kw), axes))
            c_in = c_out
        return steps

    # ------------------------------------------------------------------ spectra
    def bond_entropies(self, *, alpha: float = 1.0, base: float = 2.0) -> list[float]:
        """Entanglement entropy at every bond of the current (trained) cores.

        The spectra come from an exact :func:`tnconv.to_mps` of the current kernel along the
        same chain (under ``no_grad``).

        Examples
        --------
        >>> import torch, tnconv
        >>> layer = tnconv.MPSConv2d.from_conv(torch.nn.Conv2d(4, 4, 3))
        >>> len(layer.bond_entropies())
        3
        """
        with torch.no_grad():
            mps = to_mps(self.kernel(), self.cut, split=self.split or None)
        return [float(entropy(s, alpha=alpha, base=base)) for s in mps.bond_spectra]

    def recompress(
        self,
        threshold: float | None = None,
        *,
        cutoff_mode: str = "rel",
        max_bond: int | None = None,
        max_error: float | None = None,
    ) -> list[int]:
        """Drop bond directions whose singular value fell below ``threshold``; in place.

        Rebuilds the chain from the current kernel with :func:`tnconv.to_mps` (``cutoff =
        threshold``; by default relative to each bond's largest singular value) and replaces
        the cores. Parameters are new objects (trainable or frozen as before): rebuild the
        optimizer afterwards.

        Returns
        -------
        list of int
            The new bond dimensions.

        Examples
        --------
        >>> import torch, tnconv
        >>> layer = tnconv.MPSConv2d.from_conv(torch.nn.Conv2d(4, 4, 3))
        >>> len(layer.recompress(1e-3))
        3
        """
        with torch.no_grad():
            w = self.kernel()
            mps = to_mps(w, self.cut, split=self.split or None, max_bond=max_bond,
                         max_error=max_error, cutoff=threshold,
                         cutoff_mode=cutoff_mode if threshold is not None else None)
        trainable = self.cores[0].requires_grad
        self._set_factors(mps)
        balance_factors(list(self.cores))
        self.cores.train(self.training).requires_grad_(trainable)
        self.rel_error = mps.rel_error
        return self.bond_dims

    def _factor_repr(self) -> str:
        return f"cut={self.cut!r}, bond_dims={self.bond_dims}"

