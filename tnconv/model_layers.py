"""The layers of a model: finding them (:func:`conv_layers`), selecting them (the one layer
selection of tnconv, :func:`select_layers`) and replacing one by its dotted name
(:func:`replace_layer`, the only place that does).

Everything that works on "some layers of a model" (:func:`tnconv.spectra_atlas`,
:func:`tnconv.truncate_model`, :func:`tnconv.sweep`, :func:`tnconv.tensorize`) chooses them
through :func:`select_layers`, so ``layers=`` means the same everywhere: ``None`` (every
candidate), a name or ``fnmatch`` pattern, a sequence of them, or a predicate
``(name, module) -> bool``; a pattern that matches nothing is an error listing the candidates.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Sequence

from torch import nn

__all__ = ["conv_layers", "select_layers", "replace_layer", "LayerSpec"]

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def conv_layers(
    model: nn.Module, *, include_linear: bool = False
) -> Iterator[tuple[str, nn.Module]]:
    """The convolution (and optionally linear) layers of any torch model.

    Parameters
    ----------
    model
        Any ``nn.Module``.
    include_linear
        Also yield ``nn.Linear`` layers.

    Yields
    ------
    (name, module)
        In ``model.named_modules()`` order, for ``nn.Conv1d``, ``nn.Conv2d``, ``nn.Conv3d``
        (transposed convolutions are skipped: their weight layout is ``[in, out, ...]``).

    Examples
    --------
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    >>> [n for n, _ in conv_layers(m, include_linear=True)]
    ['0', '3']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    types = (*_CONV_TYPES, nn.Linear) if include_linear else _CONV_TYPES
    for name, module in model.named_modules():
        if isinstance(module, types):
            yield name, module


#: What ``layers=`` accepts everywhere in tnconv: ``None`` (every candidate), a name or
#: ``fnmatch`` pattern, a sequence of them, or a predicate ``(name, module) -> bool``.
LayerSpec = None | str | Sequence[str] | Callable[[str, nn.Module], bool]


def _match(name: str, pattern: str) -> bool:
    return name == pattern or fnmatch.fnmatchcase(name, pattern)


def select_layers(
    model: nn.Module,
    layers: LayerSpec = None,
    *,
    include_linear: bool = False,
    types: tuple[type[nn.Module], ...] | None = None,
) -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs of :func:`conv_layers` chosen by ``layers``.

    The one layer selection of tnconv (:func:`tnconv.truncate_model`, :func:`tnconv.sweep`,
    :func:`tnconv.tensorize`).

    Parameters
    ----------
    model
        Any ``nn.Module``.
    layers
        ``None`` (every candidate), an exact name or ``fnmatch`` pattern (``"layer4.*"``), a
        sequence of them, or a predicate ``(name, module) -> bool``.
    include_linear
        ``nn.Linear`` layers are candidates too.
    types
        Only modules of these types are candidates (e.g. ``(nn.Conv2d,)``).

    Raises
    ------
    TypeError
        ``layers`` of another kind, or a pattern that is not a str.
    ValueError
        A pattern that matches no candidate (the message lists the candidates), or no layer
        selected at all.

    Examples
    --------
    >>> m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3))
    >>> [n for n, _ in select_layers(m, "1")], [n for n, _ in select_layers(m, ["*"])]
    (['1'], ['0', '1'])
    """
    candidates = [(n, m) for n, m in conv_layers(model, include_linear=include_linear)
                  if getattr(m, "weight", None) is not None
                  and (types is None or isinstance(m, types))]
    names = [n for n, _ in candidates]
    what = "layer" if types is None else " or ".join(f"nn.{t.__name__}" for t in types)
    listing = f"; the candidates are: {', '.join(names) or '(none)'}" + (
        "" if include_linear or types is not None else " (Linear layers need include_linear=True)")
    if layers is None:
        chosen = candidates
    elif callable(layers):
        chosen = [(n, m) for n, m in candidates if layers(n, m)]
    else:
        patterns = [layers] if isinstance(layers, str) else layers
        if not isinstance(patterns, Sequence) or not all(isinstance(p, str) for p in patterns):
            raise TypeError("layers must be None, a name pattern, a sequence of name patterns or "
                            f"a predicate (name, module) -> bool, got {layers!r}")
        for p in patterns:
            if not any(_match(n, p) for n in names):
                raise ValueError(f"layer pattern {p!r} matches no {what}{listing}")
        chosen = [(n, m) for n, m in candidates if any(_match(n, p) for p in patterns)]
    if not chosen:
        raise ValueError(f"no {what} selected by layers={layers!r}{listing}")
    return chosen


def replace_layer(model: nn.Module, name: str, module: nn.Module) -> nn.Module:
    """Put ``module`` where ``model``'s submodule ``name`` (a dotted name) is, in place.

    Every tnconv function that swaps a layer (``tensorize``, ``densify``, ``compress``, the
    benchmarks) goes through this one function.

    Parameters
    ----------
    model
        The model, modified in place.
    name
        The dotted name of an existing submodule, as in ``model.named_modules()``
        (``"layer1.0.conv1"``); ``""`` names the model itself.
    module
        The replacement.

    Returns
    -------
    nn.Module
        ``model`` (with the layer replaced), or ``module`` itself when ``name`` is ``""``: a
        model cannot replace itself in place, so callers use the returned value.

    Raises
    ------
    TypeError
        ``model`` or ``module`` is not an ``nn.Module``, or ``name`` is not a string.
    ValueError
        ``model`` has no submodule ``name``.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 1)))
    >>> net = replace_layer(net, "1.1", nn.Identity())
    >>> type(net[1][1]).__name__
    'Identity'
    >>> type(replace_layer(net, "", nn.Tanh())).__name__
    'Tanh'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    if not isinstance(name, str):
        raise TypeError(f"name must be a dotted module name (str), got {type(name).__name__}")
    if name == "":
        return module
    parent_name, _, child = name.rpartition(".")
    try:
        parent = model.get_submodule(parent_name) if parent_name else model
        parent.get_submodule(child)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n][:8]
        raise ValueError(f"model has no submodule {name!r} (some of its modules: "
                         f"{', '.join(names)})") from None
    setattr(parent, child, module)
    return model
