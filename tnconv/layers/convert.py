"""Swapping a model's convolutions (and linear layers) for factorized ones, and back.

:func:`tensorize` returns a *copy* of a model in which the chosen ``nn.Conv2d`` layers are
replaced by :class:`MPSConv2d`, :class:`TuckerConv2d`, :class:`CPConv2d` or
:class:`MPOConv2d` (built with ``from_conv``, so an untruncated MPS, Tucker or MPO model
computes what the original did), with a report of the parameters before and after; with
``kind="mpo"`` the chosen ``nn.Linear`` layers become :class:`MPOLinear` too. :func:`densify`
turns every factorized layer back into a plain ``nn.Conv2d`` or ``nn.Linear``.

:func:`factorized_specs` describes which layers of a model are factorized and how (kind, chain,
sub-legs, forward path: what the ranks alone do not say), as plain JSON-able data;
:func:`refactorize` rebuilds those layers in a freshly constructed dense model, so that the
factorized model's ``state_dict`` loads into it (the layers adopt the ranks of the incoming
factors). :func:`tnconv.save_checkpoint` stores the specs and :func:`tnconv.load_checkpoint` uses
them, so a compressed or tensorized model round-trips through a checkpoint.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from ..model_layers import LayerSpec, replace_layer, select_layers
from ..sizes import LayerSums, Sizes, renamed
from .base import FactorizedConv2d
from .cp_conv2d import CPConv2d
from .mpo_conv2d import MPOConv2d
from .mpo_linear import MPOLinear
from .mps_conv2d import MPSConv2d
from .tucker_conv2d import TuckerConv2d

__all__ = ["KINDS", "LINEAR_KINDS", "LayerSelector", "LayerReport", "TensorizeReport",
           "tensorize", "densify", "factorized_specs", "refactorize"]

#: Factorized layer class by ``kind``.
KINDS: dict[str, type[FactorizedConv2d]] = {
    "mps": MPSConv2d,
    "tucker": TuckerConv2d,
    "cp": CPConv2d,
    "mpo": MPOConv2d,
}

#: Factorized ``nn.Linear`` class by ``kind``: the kinds that convert Linear layers too.
LINEAR_KINDS: dict[str, type[MPOLinear]] = {"mpo": MPOLinear}

#: What ``layers=`` accepts: None, a name pattern, patterns, or a predicate ``(name, module)``
#: (the selection of :func:`tnconv.model_layers.select_layers`).
LayerSelector = LayerSpec


@dataclass(frozen=True)
class LayerReport(Sizes):
    """Parameters of one replaced layer before and after."""

    name: str
    kind: str
    shape: tuple[int, ...]
    params_before: int
    params_after: int

    ratio = renamed("ratio", "compression_ratio")


@dataclass
class TensorizeReport(LayerSums):
    """What :func:`tensorize` replaced, with parameter counts.

    Attributes
    ----------
    kind
        ``"mps"``, ``"tucker"`` or ``"cp"``.
    layers
        One :class:`LayerReport` per replaced convolution, in module order.
    model_params_before, model_params_after
        Parameters of the whole model before and after.
    skipped
        Selected ``nn.Conv2d`` subclasses left as they were, because their own ``forward``
        (weight standardisation, dynamic "same" padding, ...) is more than ``F.conv2d``.
    """

    kind: str
    layers: list[LayerReport] = field(default_factory=list)
    model_params_before: int = 0
    model_params_after: int = 0
    skipped: list[str] = field(default_factory=list)


    ratio = renamed("ratio", "compression_ratio")

    def to_dicts(self) -> list[dict[str, Any]]:
        """One dict per layer (name, kind, shape, params_before, params_after,
        compression_ratio)."""
        return [{"name": r.name, "kind": r.kind, "shape": "x".join(map(str, r.shape)),
                 "params_before": r.params_before, "params_after": r.params_after,
                 "compression_ratio": r.compression_ratio} for r in self.layers]

    def to_pandas(self) -> Any:
        """The per-layer table as a ``pandas.DataFrame``."""
        import pandas as pd

        return pd.DataFrame(self.to_dicts())

    def __str__(self) -> str:
        lines = [f"{'layer':<32} {'shape':>16} {'before':>10} {'after':>10} {'ratio':>7}"]
        for r in self.layers:
            lines.append(f"{r.name:<32} {'x'.join(map(str, r.shape)):>16} "
                         f"{r.params_before:>10} {r.params_after:>10} "
                         f"{r.compression_ratio:>7.2f}")
        lines.append(f"{'replaced layers (' + self.kind + ')':<32} {'':>16} "
                     f"{self.params_before:>10} {self.params_after:>10} "
                     f"{self.compression_ratio:>7.2f}")
        lines.append(f"{'whole model':<32} {'':>16} {self.model_params_before:>10} "
                     f"{self.model_params_after:>10} "
                     f"{self.model_params_before / max(self.model_params_after, 1):>7.2f}")
        return "\n".join(lines)


def _plain_conv(module: nn.Module) -> bool:
    """Whether ``module`` computes exactly ``nn.Conv2d``'s convolution of its weight."""
    kind = type(module)
    return (kind.forward is nn.Conv2d.forward
            and kind._conv_forward is nn.Conv2d._conv_forward)  # type: ignore[attr-defined]


def _plain_linear(module: nn.Module) -> bool:
    """Whether ``module`` is used through ``nn.Linear``'s forward: not a subclass with its own,
    nor the output projection of ``nn.MultiheadAttention``, which reads the weight itself."""
    return (type(module).forward is nn.Linear.forward
            and not isinstance(module, nn.modules.linear.NonDynamicallyQuantizableLinear))


def _linear_named(model: nn.Module, layers: LayerSelector) -> list[str]:
    """The ``nn.Linear`` layers that ``layers`` selects (none where it selects nothing)."""
    try:
        named = select_layers(model, layers, include_linear=True, types=(nn.Conv2d, nn.Linear))
    except ValueError:
        return []
    return [n for n, m in named if isinstance(m, nn.Linear)]


def _choose_layers(model: nn.Module, kind: str, layers: LayerSelector
                   ) -> tuple[list[tuple[str, nn.Module]], list[str]]:
    """The layers ``kind`` replaces, and the selected ones it leaves (with a warning)."""
    if kind in LINEAR_KINDS:
        chosen = select_layers(model, layers, include_linear=True, types=(nn.Conv2d, nn.Linear))
    else:
        try:
            chosen = select_layers(model, layers, types=(nn.Conv2d,))
        except ValueError:
            linear = [] if layers is None else _linear_named(model, layers)
            if linear:  # a Linear named for a Conv2d-only kind: say so
                raise ValueError(f"kind {kind!r} converts nn.Conv2d layers only; "
                                 f"{', '.join(linear[:8])} are nn.Linear: use kind='mpo' "
                                 f"(valid kinds for Linear: {', '.join(LINEAR_KINDS)})"
                                 ) from None
            raise
    own = [n for n, m in chosen if not (_plain_linear(m) if isinstance(m, nn.Linear)
                                        else _plain_conv(m))]
    if own:
        warnings.warn(f"tensorize leaves {len(own)} nn.Conv2d / nn.Linear subclass layer(s) "
                      f"with their own forward as they are: {', '.join(own[:8])}"
                      + (", ..." if len(own) > 8 else ""), stacklevel=3)
    grouped = [n for n, m in chosen if kind == "mpo" and getattr(m, "groups", 1) != 1]
    if grouped:
        warnings.warn(f"tensorize (kind='mpo') leaves {len(grouped)} grouped convolution(s) "
                      f"dense, an MPO needs groups=1: {', '.join(grouped[:8])}"
                      + (", ..." if len(grouped) > 8 else ""), stacklevel=3)
    skipped = own + grouped
    return [(n, m) for n, m in chosen if n not in skipped], skipped


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def tensorize(
    model: nn.Module,
    *,
    kind: str = "mps",
    layers: LayerSelector = None,
    inplace: bool = False,
    progress: bool = True,
    **criteria: Any,
) -> tuple[nn.Module, TensorizeReport]:
    """Replace a model's convolutions (and, for MPOs, linear layers) by trainable factorized ones.

    Parameters
    ----------
    model
        Any ``nn.Module``; it is deep-copied (never modified) unless ``inplace=True``.
        A bare ``nn.Conv2d`` is returned as its factorized layer. Replaced layers keep
        the train/eval mode of the convolutions they replace.
    kind
        ``"mps"`` (:class:`MPSConv2d`), ``"tucker"`` (:class:`TuckerConv2d`), ``"cp"``
        (:class:`CPConv2d`) or ``"mpo"`` (:class:`MPOConv2d`, and :class:`MPOLinear` for
        ``nn.Linear`` layers).
    layers
        Which ``nn.Conv2d`` modules to replace: ``None`` (default) for every ``nn.Conv2d``,
        1x1 ones included (they hold most of a ResNet-50's weights); a name pattern such as
        ``"layer4.*"`` or a list of them (``fnmatch`` on the qualified module name); or a
        predicate ``(name, module) -> bool`` (:func:`tnconv.model_layers.select_layers`: a pattern
        that matches no ``nn.Conv2d``, or a selection of none, raises ``ValueError``). Only
        ``nn.Conv2d`` modules are replaced, and with ``kind="mpo"`` ``nn.Linear`` ones too
        (every one where ``layers`` is None; naming a Linear layer for another kind is a
        ``ValueError``). Subclasses with their own ``forward``, the output projections of
        ``nn.MultiheadAttention`` and, for ``"mpo"``, grouped convolutions are left as they
        are, with a warning, and listed in ``report.skipped``.
    inplace
        Modify ``model`` itself instead of a copy.
    progress
        A tqdm bar over the layers (factoring a ResNet-50 takes 5-30 s on a CPU); shown only
        when more than one layer is replaced.
    **criteria
        Passed to ``from_conv`` of the chosen class: for all three ``max_bond``,
        ``max_error``, ``ratio`` and ``path``; MPS and Tucker also ``keep``, ``cutoff``,
        ``cutoff_mode``; MPS ``cut`` and ``split``; Tucker ``ranks``; CP ``rank``,
        ``n_iter``, ``tol``, ``seed``; MPO ``in_shape``, ``out_shape``, ``pairs``, ``sweeps``
        (:func:`tnconv.to_mpo`; the shapes apply to every layer, so leave them out for a
        model: balanced sub-legs per layer).

    Returns
    -------
    (nn.Module, TensorizeReport)
        The new model and the parameters before/after, per layer and in total.

    Raises
    ------
    ValueError
        Unknown ``kind``, ``layers`` patterns that match no ``nn.Conv2d`` (nor, for
        ``"mpo"``, ``nn.Linear``), or an ``nn.Linear`` named for a Conv2d-only kind.
    TypeError
        ``model`` is not an ``nn.Module`` or ``layers`` has the wrong type.

    Examples
    --------
    >>> import torch, tnconv
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(),
    ...                           torch.nn.Conv2d(16, 16, 3))
    >>> new, report = tnconv.tensorize(net, kind="tucker", ranks=4)
    >>> [r.name for r in report.layers], type(new[2]).__name__
    (['0', '2'], 'TuckerConv2d')
    >>> mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64))
    >>> type(tnconv.tensorize(mlp, kind="mpo", max_bond=4)[0][1]).__name__
    'MPOLinear'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    chosen, skipped = _choose_layers(model, kind, layers)
    before = _count(model)
    target = model if inplace else copy.deepcopy(model)
    report = TensorizeReport(kind=kind, model_params_before=before, skipped=skipped)
    bar = tqdm(chosen, desc=f"tensorize ({kind})", unit="layer", dynamic_ncols=True,
               disable=not progress or len(chosen) < 2)
    for name, _ in bar:
        conv = target.get_submodule(name)
        if isinstance(conv, nn.Linear):
            new: nn.Module = LINEAR_KINDS[kind].from_linear(conv, **criteria)
        else:
            new = KINDS[kind].from_conv(conv, **criteria)  # type: ignore[attr-defined]
        new.train(conv.training)
        target = replace_layer(target, name, new)  # name "": the model is itself a conv
        report.layers.append(LayerReport(name, kind, tuple(conv.weight.shape),
                                         sum(p.numel() for p in conv.parameters()),
                                         new.num_params))
    report.model_params_after = _count(target)
    return target, report


def densify(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Replace every factorized layer of a model by its dense ``nn.Conv2d`` (``to_conv``) or
    ``nn.Linear`` (``to_linear``).

    Parameters
    ----------
    model
        A model, typically from :func:`tensorize` (deep-copied unless ``inplace=True``).
    inplace
        Modify ``model`` itself.

    Returns
    -------
    nn.Module
        A model with plain convolutions and linear layers only (a factorized model at the
        top level is returned as its ``nn.Conv2d`` or ``nn.Linear``).

    Examples
    --------
    >>> import torch, tnconv
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3))
    >>> type(tnconv.densify(tnconv.tensorize(net)[0])[0]).__name__
    'Conv2d'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, (FactorizedConv2d, MPOLinear)):
        return _dense(model)
    target = model if inplace else copy.deepcopy(model)
    names = [n for n, m in target.named_modules() if isinstance(m, (FactorizedConv2d, MPOLinear))]
    for name in names:
        replace_layer(target, name, _dense(target.get_submodule(name)))
    return target


def _dense(layer: nn.Module) -> nn.Module:
    return layer.to_linear() if isinstance(layer, MPOLinear) else layer.to_conv()


def factorized_specs(model: nn.Module) -> dict[str, dict[str, Any]]:
    """What :func:`refactorize` needs to rebuild every factorized layer of ``model``.

    Returns
    -------
    dict
        Qualified layer name -> ``{"kind": "mps" | "tucker" | "cp" | "mpo", "path": ...}``
        plus, for MPS layers, ``"cut"`` and ``"split"``, for MPO layers (conv and linear)
        ``"in_shape"`` and ``"out_shape"``; plain JSON-able values. Empty for a model without
        factorized layers.

    Examples
    --------
    >>> import torch, tnconv
    >>> net = tnconv.tensorize(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3)), max_bond=2)[0]
    >>> factorized_specs(net)
    {'0': {'kind': 'mps', 'path': 'auto', 'cut': 'out|kh|kw|in', 'split': {}}}
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    specs: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        if not isinstance(module, (FactorizedConv2d, MPOLinear)) or not name:
            continue
        spec: dict[str, Any] = {"kind": module.kind, "path": module.path}
        if isinstance(module, MPSConv2d):
            spec["cut"] = module.cut
            spec["split"] = {leg: list(sizes) for leg, sizes in module.split.items()}
        if isinstance(module, (MPOConv2d, MPOLinear)):
            spec["in_shape"], spec["out_shape"] = list(module.in_shape), list(module.out_shape)
        specs[name] = spec
    return specs


#: The cheapest factorization of each kind; :func:`refactorize` builds it, and loading a
#: state dict then sets the real ranks and values.
_SEED_OPTIONS: dict[str, dict[str, Any]] = {
    "mps": {"max_bond": 1},
    "tucker": {"ranks": (1, 1)},
    "cp": {"rank": 1, "n_iter": 1},
    "mpo": {"max_bond": 1},
}


def refactorize(model: nn.Module, specs: dict[str, dict[str, Any]]) -> nn.Module:
    """Replace the dense layers named in ``specs`` by factorized layers; in place.

    The new layers have rank 1 (a placeholder); ``model.load_state_dict`` of the factorized
    model's weights then gives them their ranks and values (see
    :meth:`FactorizedConv2d._load_from_state_dict`).

    Parameters
    ----------
    model
        A dense model of the same architecture (e.g. rebuilt by :func:`tnconv.get_model`).
    specs
        From :func:`factorized_specs`.

    Returns
    -------
    nn.Module
        ``model`` itself.

    Raises
    ------
    ValueError
        A name that is not an ``nn.Conv2d`` of ``model`` (or an ``nn.Linear``, for ``"mpo"``),
        or an unknown kind.

    Examples
    --------
    >>> import torch, tnconv
    >>> dense = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3))
    >>> small = tnconv.tensorize(dense, max_bond=2)[0]
    >>> fresh = refactorize(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3)),
    ...                     factorized_specs(small))
    >>> _ = fresh.load_state_dict(small.state_dict())
    >>> fresh[0].bond_dims
    [2, 2, 2]
    """
    if not isinstance(specs, dict):
        raise TypeError(f"specs must be a dict from factorized_specs, got {type(specs).__name__}")
    for name, spec in specs.items():
        kind = spec.get("kind") if isinstance(spec, dict) else None
        if kind not in KINDS:
            raise ValueError(f"layer {name!r}: unknown factorized kind {kind!r}; valid: "
                             f"{', '.join(KINDS)}")
        try:
            conv = model.get_submodule(name)
        except AttributeError:
            conv = None
        linear = kind in LINEAR_KINDS and isinstance(conv, nn.Linear)
        if not (linear or isinstance(conv, nn.Conv2d)):
            what = "an nn.Conv2d or nn.Linear" if kind in LINEAR_KINDS else "an nn.Conv2d"
            raise ValueError(f"layer {name!r} of the specs is not {what} of the model")
        options = dict(_SEED_OPTIONS[kind])
        if kind == "mps":
            split = {leg: tuple(sizes) for leg, sizes in (spec.get("split") or {}).items()}
            options.update(cut=spec["cut"], split=split or None)
        if kind == "mpo":
            options.update(in_shape=tuple(spec["in_shape"]), out_shape=tuple(spec["out_shape"]))
        layer = (LINEAR_KINDS[kind].from_linear(conv, **options) if linear  # type: ignore[arg-type]
                 else KINDS[kind].from_conv(conv, **options))
        layer.path = spec.get("path", "auto")
        model = replace_layer(model, name, layer)
    return model
