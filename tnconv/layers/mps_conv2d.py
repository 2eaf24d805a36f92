"""MPS (tensor-train) convolutions: the kernel as a trainable chain of cores.

:meth:`MPSConv2d.from_conv` decomposes a convolution's kernel with :func:`tnconv.to_mps` (an
SVD sweep, run once, outside autograd) and keeps the site tensors as parameters. Every forward
pass contracts them back to the kernel through a cached opt_einsum expression, so training
never differentiates through an SVD: gradients stay finite for rank-deficient kernels.

For a chain ``in | spatial sites | out`` (the default ``"out|kh|kw|in"``, ungrouped, no
sub-legs) the cores can also be applied as a sequence of small convolutions: ``1x1
(in -> r3)``, ``1 x kw (r3 -> r2)``, ``kh x 1 (r2 -> r1)``, ``1x1 (r1 -> out)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..cuts import CutSpec, default_chain, parse_cut
from ..decomp import check_positive_int, check_ratio
from ..legs import SplitSpec
from ..mps import KernelMPS, to_mps
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
        self.bond_spectra: list[torch.Tensor] = list(mps.bond_spectra)
        self._path_cache.clear()

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
        n = len(self.sites)
        if self.groups != 1 or self.split or n < 2:
            return None
        ends = (self.sites[0], self.sites[-1])
        if ends == (("out",), ("in",)):
            order, forward = range(n - 1, -1, -1), False
        elif ends == (("in",), ("out",)):
            order, forward = range(n), True
        else:
            return None
        mids = self.sites[1:-1]
        if any(not set(s) <= {"kh", "kw"} for s in mids):
            return None
        steps: list[FactorStep] = []
        for k in order:
            core, site = self.cores[k], self.sites[k]
            if k in (0, n - 1):
                # end sites: (leg, bond) at the start, (bond, leg) at the end of the chain
                mat = core if k == 0 else core.t()  # [leg, bond]
                if site == ("in",):
                    steps.append(FactorStep(mat.t()[:, :, None, None]))
                else:
                    steps.append(FactorStep(mat[:, :, None, None]))
                continue
            # middle: (left, legs..., right) -> (c_out, c_in, legs...)
            t = core.movedim(-1, 0) if forward else core.movedim(-1, 1)
            if site == ("kw", "kh"):
                t = t.transpose(2, 3)
            kh = self.kernel_size[0] if "kh" in site else 1
            kw = self.kernel_size[1] if "kw" in site else 1
            axes = ("h" if "kh" in site else "") + ("w" if "kw" in site else "")
            steps.append(FactorStep(t.reshape(t.shape[0], t.shape[1], kh, kw), axes))
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

