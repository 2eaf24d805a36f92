"""Matrix product operator convolutions: :class:`MPOConv2d` (Garipov et al. 2016).

The kernel ``[out, in, kh, kw]`` is held as the cores of :func:`tnconv.to_mpo`: a spatial
core ``(kh, kw, b0)`` first, then one core per channel sub-leg pair ``(b_k, out_k, in_k,
b_{k+1})``. The factored forward pass never builds the kernel:

* **spatial core first**: the spatial core is one depthwise convolution with ``b0`` filters
  per input channel (``[B, in, H, W] -> [B, in * b0, H', W']``, the layer's stride, padding
  and dilation; ``groups=in``), then ``[B, in0, .., in{n-1}, b0, H' W']`` is contracted with
  the channel cores on a cotengra path (:mod:`tnconv.hyper_contraction`);
* **spatial core last**: the channel cores first, at the input's resolution (``[B, in0, ..,
  H W] -> [B, out0, .., b0, H W]``), then the spatial core as a grouped convolution of ``b0``
  channels to one per output channel (``groups=out``). Cheaper where there are fewer output
  than input channels (and without stride).

A 1x1 convolution has no spatial core: the input, padded and subsampled by the stride, is
contracted at every pixel. ``path="auto"`` takes, per input shape, the cheapest of these and
the dense path (the kernel rebuilt through opt_einsum, one ``F.conv2d``) by the estimate of
:mod:`tnconv.layers.mpo_paths`; :meth:`MPOConv2d.estimate` shows it. Padding modes other than
zeros and asymmetric padding are applied to the input up front (a per-pixel channel map
commutes with them), so every path reproduces ``F.conv2d`` of the rebuilt kernel.

**Grouped convolutions are refused** (``ValueError``): the sub-leg pairs factor one dense
``in x out`` block, which a grouped kernel does not have.

Examples
--------
>>> import torch, tnconv
>>> conv = torch.nn.Conv2d(16, 32, 3, padding=1)
>>> layer = tnconv.MPOConv2d.from_conv(conv, max_bond=4)
>>> layer.cut, layer.bond_dims
('kh,kw|out0,in0|out1,in1', [4, 4])
>>> x = torch.randn(2, 16, 8, 8)
>>> layer.path = "factored"
>>> torch.allclose(layer(x), layer.to_conv()(x), atol=1e-5)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..hyper_contraction import hyper_contract
from ..mps import KernelMPO, cut_spectra, to_mpo
from ..spectra import entropy
from .base import PATHS, FactorizedConv2d
from .mpo_paths import PathEstimate, adopt_mpo, channel_estimate, rebuild_estimate

__all__ = ["MPOConv2d"]

_ORDERS = ("first", "last")


def _out_len(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + p - d * (k - 1) - 1) // s + 1


class MPOConv2d(FactorizedConv2d):
    """A ``Conv2d`` whose kernel is a matrix product operator over channel sub-leg pairs.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, bias, padding_mode
        As :class:`torch.nn.Conv2d`; ``groups`` must be 1.
    in_shape, out_shape, pairs, ratio, max_bond, keep, max_error, cutoff, cutoff_mode, sweeps
        Keyword-only options of :func:`tnconv.to_mpo` (balanced sub-legs where not given;
        with no criterion the MPO is exact).
    path
        ``"auto"`` (by the estimate per input shape), ``"dense"`` or ``"factored"``.
    device, dtype
        Where the cores live. A fresh layer factors PyTorch's default initialisation.

    Attributes
    ----------
    cores : nn.ParameterList
        The spatial core ``(kh, kw, b0)`` (not for 1x1 kernels), then the pair cores, as
        :attr:`tnconv.KernelMPO.cores`.
    inds, in_shape, out_shape, bond_dims, cut
        Index names, sub-leg sizes, bond dimensions, the chain as a cut string.

    Examples
    --------
    >>> import torch, tnconv
    >>> layer = tnconv.MPOConv2d(64, 64, 3, padding=1, ratio=10)
    >>> layer.in_shape, layer.compression_ratio > 9
    ((8, 8), True)
    """

    kind = "mpo"

    @classmethod
    def decompose(cls, kernel: torch.Tensor, **options: Any) -> KernelMPO:
        """:func:`tnconv.to_mpo` of ``kernel`` with the layer's options.

        Examples
        --------
        >>> import torch
        >>> MPOConv2d.decompose(torch.randn(16, 16, 3, 3), max_bond=3).bond_dims
        [3, 3]
        """
        return to_mpo(kernel, **options)

    def _adopt(self, conv: nn.Conv2d, path: str, options: dict[str, Any]) -> None:
        if conv.groups != 1:
            raise ValueError(f"MPOConv2d needs groups=1, got groups={conv.groups}: the sub-leg "
                             "pairs factor one dense in x out block; use MPSConv2d, "
                             "TuckerConv2d or CPConv2d for grouped convolutions")
        super()._adopt(conv, path, options)

    def _set_factors(self, decomposition: KernelMPO) -> None:
        adopt_mpo(self, decomposition)
        self.spatial: bool = decomposition.spatial

    # ------------------------------------------------------------------ properties
    @property
    def path(self) -> str:
        """Forward path: ``"auto"`` (by the estimate), ``"dense"`` or ``"factored"``."""
        return self._path

    @path.setter
    def path(self, value: str) -> None:
        if value not in PATHS:
            raise ValueError(f"unknown path {value!r}; valid: {', '.join(PATHS)}")
        self._path = value
        self._path_cache.clear()
        self._plans.clear()

    @property
    def bond_dims(self) -> list[int]:
        """Bond dimensions ``b0, b1, ...``."""
        return [int(c.shape[-1]) for c in list(self.cores)[:-1]]

    @property
    def cut(self) -> str:
        """The chain as a cut string, e.g. ``"kh,kw|out0,in0|out1,in1"``."""
        return "|".join(",".join(i for i in ix if not i.startswith("b")) for ix in self.inds)

    @property
    def bond_spectra(self) -> list[torch.Tensor]:
        """Singular values at every bond of the kernel last decomposed, before truncation."""
        if self._spectra is None:
            chain = self._spectra_chain
            self._spectra = [] if chain is None else cut_spectra(chain)
            self._spectra_chain = None
        return self._spectra

    def bond_entropies(self, *, alpha: float = 1.0, base: float = 2.0) -> list[float]:
        """Entanglement entropy at every bond of the current (trained) kernel.

        Examples
        --------
        >>> len(MPOConv2d(8, 8, 3, max_bond=2).bond_entropies())
        2
        """
        with torch.no_grad():
            mpo = to_mpo(self.kernel(), in_shape=self.in_shape, out_shape=self.out_shape)
        return [float(entropy(s, alpha=alpha, base=base)) for s in mpo.bond_spectra]

    def _kernel_network(
        self,
    ) -> tuple[list[torch.Tensor], list[tuple[str, ...]], tuple[str, ...]]:
        return list(self.cores), self.inds, self.physical_legs

    # ------------------------------------------------------------------ estimates
    def _geometry(self, input_shape: Sequence[int]) -> dict[str, int]:
        """Batch, input size after any up-front padding, output size, and the padding left
        to the convolution."""
        n, h, w = int(input_shape[0]), int(input_shape[2]), int(input_shape[3])
        wl, wr, ht, hb = self._pads
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        prepad, (ph, pw) = self._step_padding()
        hh, ww = (h + ht + hb, w + wl + wr) if prepad else (h, w)
        return {"n": n, "hh": hh, "ww": ww, "ph": ph, "pw": pw,
                "ho": _out_len(hh, kh, sh, 2 * ph, dh), "wo": _out_len(ww, kw, sw, 2 * pw, dw)}

    def _network(self, order: str, g: dict[str, int]
                 ) -> tuple[list[tuple[str, ...]], list[tuple[int, ...]], tuple[str, ...]]:
        """The channel network of ``order`` ("first", "last"; "pixel" for 1x1 kernels)."""
        k = len(self.in_shape)
        ins, outs = tuple([f"in{j}" for j in range(k)]), tuple([f"out{j}" for j in range(k)])
        cores = list(self.cores)[1:] if self.spatial else list(self.cores)
        inds = self.inds[1:] if self.spatial else self.inds
        shapes = [tuple(c.shape) for c in cores]
        b0 = self.bond_dims[0] if self.spatial else 1
        if order == "first":
            x = (("batch", *ins, "b0", "pix"), (g["n"], *self.in_shape, b0, g["ho"] * g["wo"]))
            out = ("batch", *outs, "pix")
        elif order == "last":
            x = (("batch", *ins, "pix"), (g["n"], *self.in_shape, g["hh"] * g["ww"]))
            out = ("batch", *outs, "b0", "pix")
        else:
            x = (("batch", *ins, "pix"), (g["n"], *self.in_shape, g["ho"] * g["wo"]))
            out = ("batch", *outs, "pix")
        return [x[0], *inds], [x[1], *shapes], out

    def factored_network(self, input_shape: Sequence[int]
                         ) -> tuple[list[tuple[str, ...]], list[tuple[int, ...]], tuple[str, ...]]:
        """The channel network the factored path contracts for an input ``(N, C, H, W)`` (in
        the order :meth:`estimate` picks): index names and shapes, the input (after the
        spatial core where it comes first) first, and the output indices.

        Examples
        --------
        >>> MPOConv2d(16, 16, 3, max_bond=2).factored_network((1, 16, 6, 6))[1][0]
        (1, 4, 4, 2, 16)
        """
        return self._network(self.estimate(input_shape)["order"], self._geometry(input_shape))

    def _order_estimate(self, order: str, g: dict[str, int]) -> PathEstimate:
        est = channel_estimate(*self._network(order, g))
        if order == "pixel":  # the padded, subsampled input is a copy
            return est + PathEstimate(0, 0, g["n"] * self.in_channels * g["ho"] * g["wo"])
        b0, (kh, kw) = self.bond_dims[0], self.kernel_size
        pixels = g["n"] * g["ho"] * g["wo"]
        channels = self.in_channels if order == "first" else self.out_channels
        written = pixels * channels * (b0 if order == "first" else 1)
        return est + PathEstimate(pixels * channels * b0 * kh * kw, written, written)

    def estimate(self, input_shape: Sequence[int]) -> dict[str, Any]:
        """Cost of one forward pass on each path for an input ``(N, C, H, W)``.

        Returns
        -------
        dict
            ``"dense"`` and ``"factored"``: :class:`tnconv.layers.mpo_paths.PathEstimate`
            (multiply-adds, peak and written elements; the dense one includes rebuilding the
            kernel); ``"order"``: where the factored path applies the spatial core
            (``"first"``, ``"last"``, or ``"pixel"`` for a 1x1 kernel).

        Examples
        --------
        >>> est = MPOConv2d(32, 32, 3, max_bond=2).estimate((8, 32, 16, 16))
        >>> est["order"], est["factored"].flops < est["dense"].flops
        ('first', True)
        """
        g = self._geometry(input_shape)
        (kh, kw) = self.kernel_size
        out = g["n"] * self.out_channels * g["ho"] * g["wo"]
        shapes = [tuple(c.shape) for c in self.cores]
        dense = rebuild_estimate(shapes, self.inds, self.physical_legs) + PathEstimate(
            out * self.in_channels * kh * kw, out, out)
        orders = _ORDERS if self.spatial else ("pixel",)
        costs = {o: self._order_estimate(o, g) for o in orders}
        order = min(orders, key=lambda o: costs[o].score)
        return {"dense": dense, "factored": costs[order], "order": order}

    def flops(self, input_shape: Sequence[int]) -> dict[str, int | None]:
        """Multiply-adds of one forward pass on each path (see :meth:`estimate`).

        Examples
        --------
        >>> sorted(MPOConv2d(8, 8, 3, max_bond=2).flops((1, 8, 16, 16)))
        ['dense', 'factored']
        """
        est = self.estimate(input_shape)
        return {"dense": est["dense"].flops, "factored": est["factored"].flops}

    # ------------------------------------------------------------------ forward
    def _plan(self, x: torch.Tensor) -> str:
        """``"dense"`` or the factored order for this input shape (cached)."""
        if self._path == "dense":
            return "dense"
        key = (tuple(x.shape), tuple(self.bond_dims))
        plan = self._plans.get(key)
        if plan is None:
            est = self.estimate(key[0])
            use = self._path == "factored" or est["factored"].score < est["dense"].score
            plan = self._plans[key] = est["order"] if use else "dense"
        return plan

    def _use_factored(self, x: torch.Tensor) -> tuple[bool, None]:
        return self._plan(x) != "dense", None

    def _factored_forward(self, x: torch.Tensor, steps: Any = None) -> torch.Tensor:
        order = self._plan(x)
        g = self._geometry(x.shape)
        if self._step_padding()[0]:
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            x = F.pad(x, self._pads, mode=mode)
        n, ho, wo = g["n"], g["ho"], g["wo"]
        inds, _, out = self._network(order, g)
        cores = list(self.cores)
        if order == "pixel":
            if g["ph"] or g["pw"]:
                x = F.pad(x, (g["pw"], g["pw"], g["ph"], g["ph"]))
            x = x[:, :, ::self.stride[0], ::self.stride[1]]
            y = hyper_contract([x.reshape(n, *self.in_shape, ho * wo), *cores], inds, out)
        elif order == "first":  # depthwise, b0 filters per input channel
            b0, c = int(cores[0].shape[-1]), self.in_channels
            spatial = cores[0].permute(2, 0, 1).unsqueeze(1).repeat(c, 1, 1, 1)
            z = F.conv2d(x, spatial, None, self.stride, (g["ph"], g["pw"]), self.dilation, c)
            z = z.reshape(n, *self.in_shape, b0, ho * wo)  # channel (c, b0)
            y = hyper_contract([z, *cores[1:]], inds, out)
        else:  # grouped, b0 channels to one per output channel
            b0, c = int(cores[0].shape[-1]), self.out_channels
            z = hyper_contract([x.reshape(n, *self.in_shape, g["hh"] * g["ww"]), *cores[1:]],
                               inds, out)
            spatial = cores[0].permute(2, 0, 1).unsqueeze(0).repeat(c, 1, 1, 1)
            y = F.conv2d(z.reshape(n, c * b0, g["hh"], g["ww"]), spatial, None, self.stride,
                         (g["ph"], g["pw"]), self.dilation, c)
        y = y.reshape(n, self.out_channels, ho, wo)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def _factor_repr(self) -> str:
        return (f"in_shape={self.in_shape}, out_shape={self.out_shape}, "
                f"bond_dims={self.bond_dims}")

