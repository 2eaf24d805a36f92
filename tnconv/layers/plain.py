"""A factorized layer as plain ``torch.nn`` modules: the deployable forms of its two paths.

A :class:`~tnconv.layers.base.FactorizedConv2d` rebuilds its kernel through opt_einsum in
``forward`` (dense path) or applies its factors as a sequence of convolutions (factored path).
A deployed model needs neither the contraction nor the choice: :func:`dense_module` is the
dense path with the kernel built once (an ``nn.Conv2d``), :func:`factored_module` the factored
path as an ``nn.Sequential`` of ``nn.Conv2d`` (after an ``nn.ZeroPad2d`` / reflection /
replication / circular pad where the layer's padding is asymmetric or not zeros). Both hold
detached copies of the factors and compute what the layer computes, to float rounding; they
export to ONNX, TorchScript and ``torch.export`` like any convolution.

Examples
--------
>>> import torch, tnconv
>>> layer = tnconv.TuckerConv2d.from_conv(torch.nn.Conv2d(8, 8, 3, padding=1), ranks=(2, 2))
>>> seq = factored_module(layer)
>>> [type(m).__name__ for m in seq]
['Conv2d', 'Conv2d', 'Conv2d']
>>> x = torch.randn(2, 8, 6, 6)
>>> torch.allclose(seq(x), layer(x), atol=1e-5)
True
"""

from __future__ import annotations

import torch
from torch import nn

from .base import FactorizedConv2d
from .mpo_linear import MPOLinear

__all__ = ["dense_module", "factored_module"]

_PADS: dict[str, type[nn.Module]] = {
    "zeros": nn.ZeroPad2d, "reflect": nn.ReflectionPad2d, "replicate": nn.ReplicationPad2d,
    "circular": nn.CircularPad2d,
}


def _check(layer: object) -> FactorizedConv2d | MPOLinear:
    if not isinstance(layer, (FactorizedConv2d, MPOLinear)):
        raise TypeError("layer must be a tnconv factorized convolution (MPSConv2d, "
                        f"TuckerConv2d, CPConv2d, MPOConv2d) or MPOLinear, got "
                        f"{type(layer).__name__}")
    return layer


def dense_module(layer: FactorizedConv2d | MPOLinear) -> nn.Conv2d | nn.Linear:
    """The dense path of ``layer`` as an ``nn.Conv2d`` (``nn.Linear``) whose weight is built
    once.

    Parameters
    ----------
    layer
        A factorized convolution or an :class:`tnconv.MPOLinear` (not modified).

    Returns
    -------
    nn.Conv2d or nn.Linear
        Same hyper-parameters, device, dtype and train/eval mode; a detached copy.

    Examples
    --------
    >>> import torch, tnconv
    >>> layer = tnconv.MPSConv2d.from_conv(torch.nn.Conv2d(4, 6, 3), max_bond=2)
    >>> dense_module(layer).weight.shape
    torch.Size([6, 4, 3, 3])
    >>> dense_module(tnconv.MPOLinear(16, 8, max_bond=2)).weight.shape
    torch.Size([8, 16])
    """
    layer = _check(layer)
    return layer.to_linear() if isinstance(layer, MPOLinear) else layer.to_conv()


def factored_module(layer: FactorizedConv2d | MPOLinear) -> nn.Sequential | None:
    """The factored path of ``layer`` as an ``nn.Sequential`` of plain convolutions.

    Parameters
    ----------
    layer
        A factorized convolution (not modified).

    Returns
    -------
    nn.Sequential or None
        One ``nn.Conv2d`` per factor (the layer's bias on the last), preceded by a padding
        module where the layer pads asymmetrically or with a ``padding_mode`` other than
        zeros; ``None`` where the layer has no factored path of convolutions (grouped layers,
        chains with sub-legs, chains whose ends are not ``in`` and ``out``, MPO layers, whose
        factored path is an einsum contraction). Same device, dtype and mode.

    Examples
    --------
    >>> import torch, tnconv
    >>> conv = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, padding_mode="reflect")
    >>> seq = factored_module(tnconv.MPSConv2d.from_conv(conv, cut="out|in,kh,kw"))
    >>> [type(m).__name__ for m in seq]
    ['ReflectionPad2d', 'Conv2d', 'Conv2d']
    >>> factored_module(tnconv.MPSConv2d.from_conv(torch.nn.Conv2d(4, 4, 3, groups=2))) is None
    True
    """
    layer = _check(layer)
    if isinstance(layer, MPOLinear):
        return None
    steps = layer._factor_steps()
    if steps is None:
        return None
    prepad, (ph, pw) = layer._step_padding()
    modules: list[nn.Module] = []
    if prepad:
        modules.append(_PADS[layer.padding_mode](layer._pads))
    (sh, sw), (dh, dw) = layer.stride, layer.dilation
    last = len(steps) - 1
    with torch.no_grad():
        for i, st in enumerate(steps):
            h, w = "h" in st.axes, "w" in st.axes
            weight = st.weight.detach()
            bias = layer.bias if i == last and layer.bias is not None else None
            conv = nn.Conv2d(
                weight.shape[1] * st.groups, weight.shape[0], tuple(weight.shape[2:]),
                stride=(sh if h else 1, sw if w else 1), padding=(ph if h else 0, pw if w else 0),
                dilation=(dh if h else 1, dw if w else 1), groups=st.groups,
                bias=bias is not None, device=weight.device, dtype=weight.dtype)
            conv.weight.copy_(weight)
            if bias is not None:
                conv.bias.copy_(bias.detach())
            modules.append(conv)
    return nn.Sequential(*modules).train(layer.training)
