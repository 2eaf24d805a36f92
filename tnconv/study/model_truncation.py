"""Model-wide truncation: pick layers by name, truncate each kernel along one or more cuts.

:func:`truncate_model` applies :func:`tnconv.truncate` to every selected layer of a torch
model and returns a new model with the truncated kernels plus one report row per layer.

Selecting layers (``layers=``)
------------------------------
Candidates are the convolutions (:class:`torch.nn.Conv1d`, ``Conv2d``, ``Conv3d``, strided,
dilated, grouped and depthwise alike) and, with ``include_linear=True``, the
:class:`torch.nn.Linear` layers. ``layers`` narrows them down: ``None`` (all), one name
pattern or a list of them (exact qualified names such as ``"layer1.0.conv2"`` or
:mod:`fnmatch` patterns such as ``"layer4.*"``), or a predicate ``(name, module) -> bool``.

Per-layer settings
------------------
``cut`` and every criterion may be one value for all layers or a mapping from a name pattern to
a value; a layer takes the value of the first pattern that matches it (exact names first),
and a criterion no pattern matches is not applied to that layer (a pattern that matches no
candidate layer at all raises ``ValueError``: it is a typo). A single ``cutoff_mode`` goes with
the layers that have a ``cutoff``.

Several cuts in sequence
------------------------
``cut=["out|in,kh,kw", "out,kh|in,kw"]`` truncates the kernel along the first cut, then the
result along the second, with the same criteria. The report row then gives the *combined*
``rel_error = ||W - W_n|| / ||W||`` and ``norm_loss = 1 - ||W_n|| / ||W||`` of the whole
sequence; ``rank``, ``full_rank``, the entropies and ``params_after`` are those of the last
step (the final kernel has exactly that rank across the last cut) and ``ranks`` lists every
step's rank.
"""

from __future__ import annotations

import copy
import fnmatch
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..cuts import parse_cut
from ..decomp import Criteria
from ..legs import kernel_legs
from ..model_layers import LayerSpec, select_layers
from ..records import Records
from ..truncation import CutSVD

__all__ = ["truncate_model", "per_layer", "select_layers", "LayerSpec"]

_CRITERIA = ("max_bond", "keep", "max_error", "cutoff", "cutoff_mode")
#: Attribute of a model returned by truncate_model that holds the report rows of every
#: truncation applied to it, in order (read by retrain).
REPORT_ATTR = "_tnconv_truncation"


def per_layer(value: Any, name: str) -> Any:
    """The setting for layer ``name``: ``value`` itself, or from a ``{pattern: value}`` mapping.

    Examples
    --------
    >>> per_layer({"conv1": 0.5, "layer*": 0.25}, "layer2.0.conv1"), per_layer(3, "x")
    (0.25, 3)
    """
    if not isinstance(value, Mapping):
        return value
    if name in value:
        return value[name]
    for pattern, v in value.items():
        if fnmatch.fnmatchcase(name, pattern):
            return v
    return None


def _as_cuts(cut: Any, name: str) -> list[str]:
    if cut is None:
        raise ValueError(f"no cut given for layer {name!r}")
    if isinstance(cut, str):
        return [cut]
    if isinstance(cut, Sequence) and cut and all(isinstance(c, str) for c in cut):
        return list(cut)
    raise TypeError(f"cut must be a cut string or a list of them, got {cut!r}")


def _truncate_kernel(
    weight: torch.Tensor, cuts: Sequence[str], criteria: Criteria
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Truncate along each cut in turn; the report of the combined result."""
    w = weight.detach()
    reports = []
    for c in cuts:
        w, rep = CutSVD(w, c).truncate(criteria)
        reports.append(rep)
    last = reports[-1].as_dict()
    if len(reports) > 1:
        ref = weight.detach().double()
        nrm = float(ref.norm())
        diff = float((ref - w.double()).norm())
        last["cut"] = " ; ".join(r.cut for r in reports)
        last["rel_error"] = diff / nrm if nrm > 0 else 0.0
        last["norm_loss"] = 1.0 - float(w.double().norm()) / nrm if nrm > 0 else 0.0
    last["ranks"] = [r.rank for r in reports]
    return w, last


def truncate_model(
    model: nn.Module,
    *,
    cut: str | Sequence[str] | Mapping[str, Any],
    max_bond: int | Mapping[str, int] | None = None,
    keep: float | Mapping[str, float] | None = None,
    max_error: float | Mapping[str, float] | None = None,
    cutoff: float | Mapping[str, float] | None = None,
    cutoff_mode: str | Mapping[str, str] | None = None,
    layers: LayerSpec = None,
    include_linear: bool = False,
    inplace: bool = False,
) -> tuple[nn.Module, Records]:
    """Truncate the kernels of a whole model along cuts, layer by layer.

    Parameters
    ----------
    model
        Any torch model. Left unchanged unless ``inplace=True``.
    cut
        A bipartition (``"out,kh|in,kw"``), a list of them applied in sequence, or a mapping
        ``{name pattern: cut or list}`` for per-layer cuts.
    max_bond, keep, max_error, cutoff, cutoff_mode
        Criteria as in :func:`tnconv.truncate` (the smallest rank wins), each a single value
        or a mapping ``{name pattern: value}``.
    layers
        Which layers (module docstring): ``None`` for all convolutions, name patterns, or a
        predicate ``(name, module) -> bool``.
    include_linear
        Also consider :class:`torch.nn.Linear` layers.
    inplace
        Modify ``model`` itself instead of a deep copy.

    Returns
    -------
    model_t : torch.nn.Module
        The truncated model (a copy unless ``inplace``); its kernels keep their shapes,
        dtypes and devices.
    report : Records
        One row per truncated layer: ``layer``, ``kind`` and the fields of
        :class:`tnconv.TruncationReport` (``cut, shape, rank, full_rank, rel_error, norm_loss,
        entropy_before, entropy_after, params_before, params_after, compression_ratio``) plus
        ``ranks`` (one per cut of a sequence) and the criteria used.

    Raises
    ------
    TypeError, ValueError
        Bad criteria, cuts that do not fit a layer's legs, or layer patterns that match nothing.

    Examples
    --------
    >>> import torch, tnconv
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.Conv2d(16, 16, 3))
    >>> small, rep = tnconv.truncate_model(net, cut="out,kh|in,kw", keep=0.25)
    >>> [row["rank"] for row in rep], [row["full_rank"] for row in rep]
    ([3, 12], [9, 48])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    given = dict(zip(_CRITERIA, (max_bond, keep, max_error, cutoff, cutoff_mode)))
    _check_patterns(model, {"cut": cut, **given}, include_linear)
    target = model if inplace else copy.deepcopy(model)
    # select on the given model (a predicate may compare modules), act on the target
    chosen = [(n, target.get_submodule(n))
              for n, _ in select_layers(model, layers, include_linear=include_linear)]
    plan = []
    for name, module in chosen:  # validate everything before touching any weight
        crit = {k: per_layer(v, name) for k, v in given.items()}
        if crit["cutoff"] is None and isinstance(cutoff, Mapping):
            crit["cutoff_mode"] = None  # the mode goes with the layers that have a cutoff
        crit = Criteria.from_mapping({k: v for k, v in crit.items() if v is not None})
        cuts = _as_cuts(per_layer(cut, name), name)
        legs = kernel_legs(module.weight)
        for c in cuts:
            try:
                parse_cut(c, legs, max_groups=2)
            except ValueError as exc:
                raise ValueError(f"cut {c!r} does not fit layer {name!r} "
                                 f"({type(module).__name__}, legs {', '.join(legs)}): {exc}"
                                 ) from exc
        plan.append((name, module, cuts, crit))
    rows = Records()
    for name, module, cuts, crit in plan:
        w_t, row = _truncate_kernel(module.weight, cuts, crit)
        with torch.no_grad():
            module.weight.copy_(w_t)
        rows.append({"layer": name, "kind": type(module).__name__, **row, **crit.as_dict()})
    # keep the rows of earlier truncations of this model: retrain keeps them all
    setattr(target, REPORT_ATTR, Records([*(getattr(target, REPORT_ATTR, None) or []), *rows]))
    return target, rows


def _check_patterns(model: nn.Module, settings: Mapping[str, Any], include_linear: bool) -> None:
    """Every pattern of a per-layer mapping must match some candidate layer (else: a typo)."""
    for key, value in settings.items():
        if isinstance(value, Mapping):
            try:
                select_layers(model, list(value), include_linear=include_linear)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"{key}: {exc}") from None


def combined_errors(weights: Sequence[torch.Tensor], truncated: Sequence[torch.Tensor]
                    ) -> tuple[float, float]:
    """Relative error and norm loss of a set of kernels taken together (all-layer rows).

    Examples
    --------
    >>> combined_errors([torch.ones(2, 2)], [torch.ones(2, 2)])
    (0.0, 0.0)
    """
    weights = [w.detach() for w in weights]
    total = sum(float(w.double().pow(2).sum()) for w in weights)
    diff = sum(float((w.double() - t.double()).pow(2).sum()) for w, t in zip(weights, truncated))
    kept = sum(float(t.double().pow(2).sum()) for t in truncated)
    if total == 0:
        return 0.0, 0.0
    return math.sqrt(diff / total), 1.0 - math.sqrt(kept / total)
