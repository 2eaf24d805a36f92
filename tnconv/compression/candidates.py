"""What each convolution could become, and the layer that the chosen option makes.

:class:`LayerChoices` holds one layer's families of factorizations (:mod:`.families`: svd cuts,
Tucker-2, MPS, CP; every :class:`~.families.Option` with its parameters, FLOPs and error) and
its dense option. :func:`layer_families` builds the families of one kernel through the registry
:data:`METHODS` (``method=`` of :func:`tnconv.compress`: name -> :class:`Method`);
:func:`build_layer` makes the ``nn.Module`` of an option and :func:`swap_layer` puts it in a
model by the layer's dotted name.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..model_layers import replace_layer
from ..registry import Registry
from .families import (
    CHEAP_CUTS,
    MPS_CHAIN,
    CPFamily,
    Family,
    Geometry,
    MPSFamily,
    Option,
    SVDFamily,
    TuckerFamily,
    dense_option,
)

__all__ = ["LayerChoices", "Method", "FamilyBuilder", "METHODS", "layer_families", "build_layer",
           "swap_layer",
           # re-exported from .families, where they are defined
           "Option", "Geometry", "Family", "SVDFamily", "TuckerFamily", "MPSFamily",
           "CPFamily", "CHEAP_CUTS", "MPS_CHAIN", "dense_option"]


@dataclass
class LayerChoices:
    """What one layer can become: its families and the dense option.

    Examples
    --------
    >>> import torch
    >>> w = torch.randn(8, 8, 1, 1)
    >>> lc = LayerChoices("0", dense_option((8, 8, 1, 1), 0, None),
    ...                   [SVDFamily(w, 0, None, "out|in,kh,kw")])
    >>> [o.params for o in lc.options("params")], lc.best_family("params").key
    ([16, 32, 48, 64], 'svd out|in,kh,kw')
    """

    name: str
    dense: Option
    families: list[Family]

    @classmethod
    def svd(cls, name: str, weight: torch.Tensor, cut: str = "out|in,kh,kw") -> LayerChoices:
        """A layer of ``weight`` (no bias, no measured geometry) with one SVD family.

        >>> LayerChoices.svd("0", torch.randn(8, 8, 1, 1)).best_family("params").key
        'svd out|in,kh,kw'
        """
        shape = tuple(weight.shape)
        return cls(name, dense_option(shape, 0, None), [SVDFamily(weight, 0, None, cut)])

    def options(self, kind: str) -> list[Option]:
        """Every grid option cheaper than dense (in ``kind``), then dense."""
        limit = self.dense.cost(kind)
        opts = [o for f in self.families for o in f.grid() if o.cost(kind) < limit]
        return [*opts, self.dense]

    def best_family(self, kind: str) -> Family | None:
        """The family with the best error per unit of cost (:meth:`Family.area`)."""
        if not self.families:
            return None
        return min(self.families, key=lambda f: f.area(kind))


#: ``(weight, bias, geom, cuts) -> families`` of one method.
FamilyBuilder = Callable[[torch.Tensor, int, "Geometry | None", Any], list[Family]]


@dataclass(frozen=True)
class Method:
    """One ``method=`` of :func:`tnconv.compress`: what builds a layer's families.

    Attributes
    ----------
    families
        ``(weight, bias, geom, cuts) -> [Family, ...]`` for a kernel ``[out, in, kh, kw]``
        that is not ``1 x 1`` (``cuts``: the svd cuts, :func:`layer_families`).
    description
        One line, for help texts.
    """

    families: FamilyBuilder
    description: str


def _svd(weight: torch.Tensor, bias: int, geom: Geometry | None, cuts: Any) -> list[Family]:
    chosen = list(CHEAP_CUTS) if cuts == "auto" else [cuts] if isinstance(cuts, str) else cuts
    return [SVDFamily(weight, bias, geom, c) for c in chosen]


def _auto(weight: torch.Tensor, bias: int, geom: Geometry | None, cuts: Any) -> list[Family]:
    return [*_svd(weight, bias, geom, cuts), TuckerFamily(weight, bias, geom),
            MPSFamily(weight, bias, geom)]


#: Valid ``method`` values of :func:`tnconv.compress`: name -> :class:`Method`.
METHODS: Registry[Method] = Registry("method", {
    "auto": Method(_auto, "per layer the best of svd, tucker and mps"),
    "svd": Method(_svd, "a two-site cut at rank r (each cut of cuts)"),
    "tucker": Method(lambda w, b, g, _: [TuckerFamily(w, b, g)], "Tucker-2 (r_out, r_in)"),
    "mps": Method(lambda w, b, g, _: [MPSFamily(w, b, g)], f"the chain {MPS_CHAIN}"),
    "cp": Method(lambda w, b, g, _: [CPFamily(w, b, g)], "CP rank R by ALS (slow)"),
})


def layer_families(weight: torch.Tensor, bias: int, geom: Geometry | None, *,
                   method: str, cuts: Any = "auto", rank_multiple: int = 1) -> list[Family]:
    """The families ``method`` allows for one kernel ``[out, in, kh, kw]``.

    Parameters
    ----------
    weight
        The kernel (not modified).
    bias
        Number of bias parameters (0 or ``out``).
    geom
        Spatial sizes for FLOP counts, or ``None``.
    method
        A name of :data:`METHODS`: ``"svd"``, ``"tucker"``, ``"mps"``, ``"cp"`` or ``"auto"``
        (svd, tucker and mps).
    cuts
        ``"auto"`` (:data:`CHEAP_CUTS`), one cut string or a list of them (svd only). A
        ``1 x 1`` convolution gets the one cut ``out|in`` and no Tucker, MPS or CP family.
    rank_multiple
        Every rank a multiple of this (each leg's full rank aside): :meth:`Family.set_multiple`.

    Raises
    ------
    UnknownNameError
        ``method`` is not in :data:`METHODS` (a ``ValueError`` listing the valid names).

    Examples
    --------
    >>> import torch
    >>> fams = layer_families(torch.randn(8, 4, 3, 3), 0, None, method="auto")
    >>> [f.key for f in fams]  # doctest: +NORMALIZE_WHITESPACE
    ['svd out|in,kh,kw', 'svd out,kh,kw|in', 'svd out,kh|in,kw', 'svd out,kw|in,kh',
     'tucker', 'mps']
    >>> layer_families(torch.randn(8, 4, 3, 3), 0, None, method="qr")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tnconv.registry.UnknownNameError: unknown method 'qr'; valid names: auto, svd, tucker, ...
    """
    build = METHODS[method].families
    if tuple(weight.shape[2:]) == (1, 1):
        families: list[Family] = [SVDFamily(weight, bias, geom, "out|in,kh,kw")]
    else:
        families = build(weight, bias, geom, cuts)
    return [f.set_multiple(rank_multiple) for f in families]


def build_layer(conv: nn.Conv2d, option: Option) -> nn.Module:
    """The layer ``option`` makes of ``conv`` (``conv`` itself for dense; same mode).

    Examples
    --------
    >>> import torch
    >>> conv = torch.nn.Conv2d(4, 8, 3)
    >>> opt = SVDFamily(conv.weight, 8, None, "out,kh|in,kw").option((3,))
    >>> type(build_layer(conv, opt)).__name__
    'MPSConv2d'
    """
    from ..layers import CPConv2d, MPSConv2d, TuckerConv2d

    if option.method == "dense":
        return conv
    if option.basis is not None:  # a data fit: factor the projected kernel U U^T W (rank r)
        conv = copy.deepcopy(conv)
        with torch.no_grad():
            w = conv.weight
            u = option.basis.to(device=w.device, dtype=torch.float64)
            proj = u @ (u.T @ w.detach().to(torch.float64).reshape(w.shape[0], -1))
            w.copy_(proj.reshape(w.shape).to(w.dtype))
    if option.method == "svd":
        layer = MPSConv2d.from_conv(conv, cut=option.cut, max_bond=option.ranks[0])
    elif option.method == "mps":
        layer = MPSConv2d.from_conv(conv, cut=MPS_CHAIN, max_bond=max(option.ranks))
    elif option.method == "tucker":
        layer = TuckerConv2d.from_conv(conv, ranks=tuple(option.ranks))
    else:
        layer = CPConv2d.from_conv(conv, rank=option.ranks[0])
    return layer.train(conv.training)


def swap_layer(model: nn.Module, name: str, option: Option
               ) -> tuple[nn.Module, nn.Conv2d, nn.Module]:
    """Put the layer ``option`` makes of ``model``'s conv ``name`` in its place (in place).

    Returns
    -------
    (model, conv, new)
        The model to use from now on (``new`` itself when ``name`` is ``""``: a model that is
        one convolution; :func:`tnconv.model_layers.replace_layer`), the conv and its replacement
        (``conv`` itself for dense).

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3))
    >>> opt = SVDFamily(net[0].weight, 8, None, "out|in,kh,kw").option((2,))
    >>> net, conv, new = swap_layer(net, "0", opt)
    >>> type(net[0]).__name__, type(conv).__name__
    ('MPSConv2d', 'Conv2d')
    """
    conv = model.get_submodule(name)
    new = build_layer(conv, option)  # type: ignore[arg-type]
    if new is not conv:
        model = replace_layer(model, name, new)
    return model, conv, new  # type: ignore[return-value]
