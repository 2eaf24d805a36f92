"""Folding batch norm into the convolution before it.

In eval mode a ``BatchNorm2d`` after a convolution is an affine map per output channel, so it
can be absorbed by the convolution's weight and bias: ``W' = W * g / sqrt(v + eps)``,
``b' = (b - m) * g / sqrt(v + eps) + beta``. The fold is computed in float64 and cast back.

Which batch norm follows which convolution is read from the model's ``torch.fx`` graph: a
``BatchNorm2d`` call whose only input is an ``nn.Conv2d`` call whose only user it is (each
module called once). Models that ``torch.fx`` cannot trace (data-dependent control flow) fall
back to the order of an ``nn.Sequential``'s children, where execution order is registration
order; a warning says so. A factored layer in its plain form (an ``nn.Sequential`` of
convolutions, :func:`tnconv.layers.plain.factored_module`) is traced into, so its batch norm
folds into the last factor.

Examples
--------
>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
>>> _ = net[1].running_mean.fill_(0.5), net[1].running_var.fill_(2.0)
>>> x = torch.randn(2, 3, 8, 8)
>>> before = net(x)
>>> fold_batchnorm(net)
[('0', '1')]
>>> type(net[1]).__name__, torch.allclose(net(x), before, atol=1e-6)
('Identity', True)
"""

from __future__ import annotations

import warnings
from collections import Counter

import torch
from torch import fx, nn

from ..model_layers import replace_layer

__all__ = ["conv_bn_pairs", "fold_batchnorm"]

_BN = (nn.BatchNorm2d,)


def _traced_pairs(model: nn.Module) -> list[tuple[str, str]]:
    graph = fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), _BN):
            continue
        src = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if (isinstance(src, fx.Node) and src.op == "call_module"
                and isinstance(modules.get(src.target), nn.Conv2d) and len(src.users) == 1
                and calls[src.target] == 1 and calls[node.target] == 1):
            pairs.append((str(src.target), str(node.target)))
    return pairs


def _last_conv(name: str, module: nn.Module) -> str | None:
    if isinstance(module, nn.Conv2d):
        return name
    if isinstance(module, nn.Sequential) and len(module):
        key = list(module._modules)[-1]
        return _last_conv(f"{name}.{key}" if name else key, module[-1])
    return None


def _sequential_pairs(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Sequential):
            continue
        kids = list(mod.named_children())
        for (a, ma), (b, mb) in zip(kids, kids[1:]):
            conv = _last_conv(f"{name}.{a}" if name else a, ma)
            if conv is not None and isinstance(mb, _BN):
                pairs.append((conv, f"{name}.{b}" if name else b))
    return pairs


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(conv name, batch-norm name)`` of every batch norm applied right after a convolution.

    Parameters
    ----------
    model
        Any module; traced with ``torch.fx`` where it can be, else read from its
        ``nn.Sequential`` containers (with a warning).

    Returns
    -------
    list of (str, str)
        Dotted names as in ``model.named_modules()``, in graph order.

    Examples
    --------
    >>> import tnconv
    >>> conv_bn_pairs(tnconv.resnet20(10, 1))[:2]
    [('conv1', 'bn1'), ('layer1.0.conv1', 'layer1.0.bn1')]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    try:
        return _traced_pairs(model)
    except Exception as exc:  # any failure of symbolic tracing: fall back, and say so
        warnings.warn(f"torch.fx cannot trace {type(model).__name__} ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:80] if str(exc) else ''}); batch norm is folded "
                      "only where it follows a convolution inside an nn.Sequential",
                      stacklevel=3)
        return _sequential_pairs(model)


@torch.no_grad()
def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    w = conv.weight.detach().double()
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    bias = (bias - bn.running_mean.double()) * scale
    if bn.bias is not None:
        bias = bias + bn.bias.double()
    new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                    padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                    padding_mode=conv.padding_mode, device=w.device, dtype=conv.weight.dtype)
    new.weight.copy_(w * scale.view(-1, 1, 1, 1))
    new.bias.copy_(bias)
    return new.train(conv.training)


def fold_batchnorm(model: nn.Module) -> list[tuple[str, str]]:
    """Fold every foldable ``BatchNorm2d`` into the convolution before it, in place.

    A batch norm folds when it has running statistics (``track_running_stats=True``) and the
    convolution's output goes to it alone (:func:`conv_bn_pairs`); the convolution is
    replaced by one with the folded weight and bias, the batch norm by ``nn.Identity``. The
    result equals the *eval-mode* model; call it on a model meant for inference.

    Parameters
    ----------
    model
        Modified in place.

    Returns
    -------
    list of (str, str)
        The ``(conv, batch norm)`` pairs folded.

    Examples
    --------
    >>> import torch, tnconv
    >>> net = tnconv.cnn4(10, 1).eval()
    >>> len(fold_batchnorm(net)), sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    (4, 0)
    """
    folded = []
    for conv_name, bn_name in conv_bn_pairs(model):
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        if bn.running_mean is None or bn.running_var is None:
            continue
        replace_layer(model, conv_name, _folded(conv, bn))
        replace_layer(model, bn_name, nn.Identity())
        folded.append((conv_name, bn_name))
    return folded
