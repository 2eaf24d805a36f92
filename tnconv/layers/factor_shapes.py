"""Loading factors of other ranks: a layer adopts the bond sizes of an incoming state dict.

A checkpoint of a truncated, re-compressed or MPO layer holds factors whose bond axes differ
from those of a freshly built layer of the same kind (``refactorize`` builds rank-1
placeholders). :func:`adopt_factor_shapes` replaces each such parameter by an empty one of the
incoming shape, before ``load_state_dict`` copies the values; only bond axes (indices that
are not open in the kernel contraction) may change size. :class:`FactorizedConv2d` and
:class:`tnconv.layers.MPOLinear` call it from ``_load_from_state_dict``.

Examples
--------
>>> import torch
>>> from torch import nn
>>> m = nn.Module()
>>> m.a, m.b = nn.Parameter(torch.ones(2, 1)), nn.Parameter(torch.ones(1, 3))
>>> network = ([m.a, m.b], [("i", "r"), ("r", "j")], ("i", "j"))
>>> adopt_factor_shapes(m, network, {"a": torch.ones(2, 4), "b": torch.ones(4, 3)}, "")
True
>>> tuple(m.a.shape), tuple(m.b.shape)
((2, 4), (4, 3))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["Network", "adopt_factor_shapes", "check_bond_sizes"]

#: A kernel network: the factors, their index names, the open indices.
Network = tuple[Sequence[torch.Tensor], Sequence[tuple[str, ...]], Sequence[str]]


def adopt_factor_shapes(module: nn.Module, network: Network, state_dict: dict[str, Any],
                        prefix: str) -> bool:
    """Give ``module``'s factor parameters the bond sizes of ``state_dict``'s; in place.

    Parameters
    ----------
    module
        The layer whose parameters are the factors of ``network``.
    network
        ``(factors, index names, open indices)`` of the layer's kernel.
    state_dict, prefix
        As ``nn.Module._load_from_state_dict`` gets them.

    Returns
    -------
    bool
        Whether any parameter was replaced (the caller clears what it cached per shape and
        checks the new sizes with :func:`check_bond_sizes`).
    """
    arrays, inds, out = network
    names = {id(p): n for n, p in module.named_parameters()}
    resized = False
    for param, ix in zip(arrays, inds, strict=True):
        name = names.get(id(param))
        new = state_dict.get(prefix + name) if name is not None else None
        if not isinstance(new, torch.Tensor) or new.shape == param.shape:
            continue
        if new.dim() != param.dim() or any(
                a != b and i in out for a, b, i in zip(new.shape, param.shape, ix, strict=True)):
            continue
        owner, _, leaf = name.rpartition(".")  # type: ignore[union-attr]
        holder = module.get_submodule(owner) if owner else module
        setattr(holder, leaf, nn.Parameter(param.new_empty(new.shape),
                                           requires_grad=param.requires_grad))
        resized = True
    return resized


def check_bond_sizes(network: Network, error_msgs: list[str]) -> None:
    """Report every index that has two sizes among the factors of ``network``.

    Examples
    --------
    >>> msgs = []
    >>> check_bond_sizes(([torch.ones(2, 3), torch.ones(4, 5)], [("i", "r"), ("r", "j")],
    ...                   ("i", "j")), msgs)
    >>> msgs
    ["bond 'r' has size 3 in one factor and 4 in another"]
    """
    sizes: dict[str, int] = {}
    for a, ix in zip(network[0], network[1], strict=True):
        for i, d in zip(ix, a.shape, strict=True):
            if sizes.setdefault(i, int(d)) != d:
                error_msgs.append(f"bond {i!r} has size {sizes[i]} in one factor and {int(d)} "
                                  "in another")
