"""The ``allocate=`` modes (:data:`ALLOCATIONS`), and ``"sensitivity"``: a knapsack on measured
drops, then the best measured allocation.

:data:`ALLOCATIONS` maps each name of ``allocate=`` of :func:`tnconv.compress` to an
:class:`Allocation`: the data-free ``uniform``, ``energy`` and ``vbmf`` (:mod:`.allocate`) and
``sensitivity`` (:func:`allocate_sensitivity`, on data), which goes as follows.

1. Each layer's drop is measured on ``data`` at a few options of its probed families
   (:func:`.sensitivity.probe_plan`), and read as a function of the option's error within each
   family (:func:`.sensitivity.probe_curves`).
   With ``fit="data"`` (the default of :func:`tnconv.compress`), each layer's data-fitted
   family (:mod:`.datafit`: the cut ``out|in,kh,kw`` fitted to the layer's outputs) is
   probed too, and the knapsacks below are built with and (labelled ``"... (weights)"``)
   without the data fits, so that offering them never loses accuracy on ``data``.
2. Several allocations meeting the budget are built: the multiple-choice knapsack on those
   predicted drops (:func:`.allocate.allocate_min_loss`, over the probed families), the same
   with a FLOPs penalty (``LAMBDAS``: a kept-dense or FLOP-heavy layer costs time), the knapsack
   over the separable cuts only (the fastest forms on CPUs), trades (each layer the knapsack
   keeps dense, forced to its separable cut at half its cost, the others re-solved), and the
   ``uniform``, ``energy`` and ``vbmf`` allocations. A knapsack allocation under ``FILL`` of
   the budget (a FLOPs penalty can stop far below it) is raised within its families by
   :func:`.allocate.fill_budget`, and dropped if it stays under.
3. Each is evaluated on ``data`` with all its layers changed at once (one pass each) and, when
   the input size is known, timed (batch 256; all of them in interleaved rounds, in this run).
   The kept allocation is the fastest of those whose measured accuracy is within
   ``LATENCY_TOLERANCE`` of the best, and never below the best of ``uniform``, ``energy`` and
   ``vbmf``: so on ``data`` the sensitivity mode is at least as accurate as every other mode,
   and faster where accuracy allows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..registry import Registry
from .allocate import (
    allocate_energy,
    allocate_min_loss,
    allocate_uniform,
    allocate_vbmf,
    fill_budget,
    total_cost,
)
from .candidates import LayerChoices, Option
from .datafit import FITS, output_moments
from .sensitivity import Evaluator, option_id, probe_curves, probe_plan

__all__ = ["FILL", "LATENCY_TOLERANCE", "LAMBDAS", "Candidate", "choose_sensitivity",
           "pick_candidate", "allocate_sensitivity", "Allocation", "ALLOCATIONS"]

#: Accuracy (fraction) a faster allocation may lose against the most accurate one.
LATENCY_TOLERANCE = 0.002
#: Knapsack candidates must keep at least this fraction of the budget (met within 2 %).
FILL = 0.98
#: FLOPs penalties of the knapsack variants, in accuracy per whole-model dense FLOPs.
LAMBDAS: tuple[float, ...] = (0.003, 0.01, 0.03)
_SEPARABLE = ("svd out,kh|in,kw", "svd out,kw|in,kh")


@dataclass
class Candidate:
    """One allocation tried: its options and what was measured on ``data``."""

    label: str
    options: list[Option]
    accuracy: float = float("nan")
    loss: float = float("nan")
    latency_s: float | None = None


def _knapsacks(layers: Sequence[LayerChoices], budget: float, kind: str,
               curves: dict[tuple[str, str], Any]) -> dict[str, list[Option]]:
    probed = [LayerChoices(lc.name, lc.dense, [f for f in lc.families
                                               if (lc.name, f.key) in curves])
              for lc in layers]
    dense_flops = sum(lc.dense.flops or 0 for lc in layers)

    def loss(i: int, o: Option) -> float:
        return 0.0 if o.method == "dense" else curves[(layers[i].name, o.key)](o.error)

    variants: dict[str, tuple[Sequence[LayerChoices], Callable[[int, Option], float]]] = {
        "knapsack": (probed, loss)}
    if dense_flops:
        for lam in LAMBDAS:
            variants[f"knapsack+flops{lam:g}"] = (
                probed, lambda i, o, lam=lam: loss(i, o) + lam * (o.flops or 0) / dense_flops)
    fast = [LayerChoices(lc.name, lc.dense, [f for f in lc.families if f.key in _SEPARABLE]
                         or lc.families) for lc in probed]
    variants["knapsack separable"] = (fast, loss)
    first = _solve(probed, budget, kind, loss)
    for i, lc in enumerate(probed):  # trades: a kept-dense layer factored at half its cost
        half = [o for f in lc.families if f.key in _SEPARABLE for o in f.grid()
                if o.cost(kind) <= 0.5 * lc.dense.cost(kind)]
        if first is not None and first[i].method == "dense" and half:
            forced = max(half, key=lambda o: (o.cost(kind), -o.error))
            variants[f"knapsack {lc.name} separable"] = (
                [*probed[:i], LayerChoices(lc.name, forced, []), *probed[i + 1:]], loss)
    out = {}
    for label, (choices, fn) in variants.items():
        found = _solve(choices, budget, kind, fn)
        if found is not None:
            out[label] = found
    return out


def _solve(layers: Sequence[LayerChoices], budget: float, kind: str,
           loss: Callable[[int, Option], float]) -> list[Option] | None:
    try:
        return allocate_min_loss(layers, budget, kind, loss)
    except ValueError:  # the probed families alone cannot meet this budget
        return None


def _candidates(layers: Sequence[LayerChoices], fitted: Sequence[LayerChoices], budget: float,
                kind: str, curves: dict[tuple[str, str], Any]) -> list[Candidate]:
    found = _knapsacks(fitted, budget, kind, curves)
    if any(f.fit == "data" for lc in fitted for f in lc.families):
        # the weight fits' own knapsacks too: with data fits offered, never worse on data
        found.update({f"{k} (weights)": v for k, v in _knapsacks(layers, budget, kind,
                                                                 curves).items()})
    # the budget is met within FILL of it: a knapsack with a FLOPs penalty (or one whose
    # losses tie) may stop far below it, and a smaller model is not what was asked for
    found = {k: fill_budget(fitted, v, budget, kind, fill=FILL) for k, v in found.items()}
    found = {k: v for k, v in found.items() if total_cost(v, kind) >= FILL * budget}
    for name in _plain():
        found[name] = ALLOCATIONS[name].function(layers, budget, kind)
    return [Candidate(label, opts) for label, opts in found.items()]


def pick_candidate(cands: Sequence[Candidate]) -> Candidate:
    """The fastest candidate within ``LATENCY_TOLERANCE`` of the most accurate, and not below
    any of ``uniform``, ``energy`` and ``vbmf`` (the data-free modes of :data:`ALLOCATIONS`,
    when among ``cands``); the most accurate when any of those left is untimed.

    Examples
    --------
    >>> cands = [Candidate("knapsack", [], 0.900, 0.3, 2.0),
    ...          Candidate("knapsack+flops0.01", [], 0.899, 0.3, 1.0),
    ...          Candidate("vbmf", [], 0.850, 0.5, 0.5)]
    >>> pick_candidate(cands).label
    'knapsack+flops0.01'
    """
    best = max(c.accuracy for c in cands)
    floor = max([c.accuracy for c in cands if c.label in _plain()], default=-math.inf)
    pool = [c for c in cands if c.accuracy >= max(best - LATENCY_TOLERANCE, floor) - 1e-12]
    if all(c.latency_s is not None for c in pool):
        return min(pool, key=lambda c: (c.latency_s, -c.accuracy, c.loss))
    return min(pool, key=lambda c: (-c.accuracy, c.loss))


def choose_sensitivity(model: nn.Module, data: Any, layers: Sequence[LayerChoices],
                       budget: float, kind: str, *, device: torch.device, cache: bool,
                       progress: bool,
                       time_all: Callable[[list[list[Option]]], list[float]] | None,
                       fit: str = "data") -> tuple[list[Option], list[float | None],
                                                   list[Candidate], tuple[float, float]]:
    """The sensitivity allocation (module docstring).

    ``fit="data"`` adds each layer's data-fitted family (:mod:`.datafit`) to the probes and
    the knapsacks; the ``uniform``, ``energy`` and ``vbmf`` candidates stay weight fits.

    Returns
    -------
    options, drops, candidates, baseline
        The kept options, each layer's predicted single-layer drop score (``None`` for dense
        or an unprobed family), every candidate with its measurements (the kept one first)
        and the dense ``(accuracy, loss)`` on ``data``.
    """
    ev = Evaluator(model, data, device=device, cache=cache)
    fitted, add_fitted = list(layers), FITS[fit].families
    if add_fitted is not None:
        names = [lc.name for lc in layers if lc.families]
        moments = ev.moments(names, lambda: output_moments(model, data, names, device=device))
        fitted = add_fitted(layers, moments)
    plan = probe_plan(fitted, kind)
    curves = probe_curves(plan, ev.probes(plan, progress=progress), ev.baseline)
    cands = _candidates(layers, fitted, budget, kind, curves)
    names = [lc.name for lc in layers]
    keys = [" ; ".join(option_id(n, o) for n, o in zip(names, c.options, strict=True))
            for c in cands]
    for c in cands:
        c.accuracy, c.loss = ev.allocation(names, c.options)
    ev.save()
    if time_all is not None:  # each allocation once, all in interleaved rounds, in this run
        unique = {k: c.options for k, c in zip(keys, cands, strict=True)}
        timed = dict(zip(unique, time_all(list(unique.values())), strict=True))
        for k, c in zip(keys, cands, strict=True):
            c.latency_s = timed[k]
    kept = pick_candidate(cands)
    drops = [None if o.method == "dense" or (n, o.key) not in curves else curves[(n, o.key)](
        o.error) for n, o in zip(names, kept.options, strict=True)]
    return kept.options, drops, [kept, *[c for c in cands if c is not kept]], ev.baseline


def allocate_sensitivity(layers: Sequence[LayerChoices], budget: float, kind: str, *,
                         model: nn.Module, data: Any, device: torch.device, cache: bool = True,
                         progress: bool = False,
                         time_all: Callable[[list[list[Option]]], list[float]] | None = None,
                         fit: str = "data"
                         ) -> tuple[list[Option], list[float | None], dict[str, Any]]:
    """``allocate="sensitivity"``: :func:`choose_sensitivity`, with its report fields.

    Parameters
    ----------
    layers, budget, kind
        As the functions of :mod:`.allocate`.
    model, data, device, cache, progress, time_all, fit
        As :func:`choose_sensitivity`.

    Returns
    -------
    options, drops, fields
        The kept options, each layer's predicted drop score (``None``: dense or unprobed)
        and the :class:`~.summary.CompressReport` fields (``predicted_drop``,
        ``uniform_predicted_drop``, ``candidates``, ``notes``).

    Examples
    --------
    >>> import torch
    >>> from tnconv.compression.candidates import dense_option, layer_families
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.Flatten(),
    ...                           torch.nn.Linear(8 * 36, 3))
    >>> data = (torch.randn(32, 1, 8, 8), torch.randint(0, 3, (32,)))
    >>> w = net[0].weight.detach()
    >>> lc = LayerChoices("0", dense_option((8, 1, 3, 3), 8, None),
    ...                   layer_families(w, 8, None, method="svd", cuts="out|in,kh,kw"))
    >>> opts, drops, fields = allocate_sensitivity([lc], 40.0, "params", model=net, data=data,
    ...                                            device=torch.device("cpu"), cache=False)
    >>> opts[0].params <= 40, fields["candidates"][0]["label"] in [c["label"]
    ...                                                            for c in fields["candidates"]]
    (True, True)
    """
    options, drops, cands, (acc0, _) = choose_sensitivity(
        model, data, layers, budget, kind, device=device, cache=cache, progress=progress,
        time_all=time_all, fit=fit)
    uniform = next(c for c in cands if c.label == "uniform")
    fields = {"predicted_drop": acc0 - cands[0].accuracy,
              "uniform_predicted_drop": acc0 - uniform.accuracy,
              "candidates": [{"label": c.label, "accuracy": c.accuracy, "loss": c.loss,
                              "latency_s": c.latency_s} for c in cands],
              "notes": [f"sensitivity: kept the {cands[0].label!r} allocation of "
                        f"{len(cands)} evaluated on data (the fastest within "
                        f"{LATENCY_TOLERANCE:g} of the most accurate, never below "
                        f"{', '.join(_plain())} on data)"]}
    return options, drops, fields


@dataclass(frozen=True)
class Allocation:
    """One ``allocate=`` mode of :func:`tnconv.compress`.

    Attributes
    ----------
    function
        ``needs_data=False``: ``(layers, budget, kind) -> options`` (:mod:`.allocate`);
        ``True``: the signature of :func:`allocate_sensitivity`.
    description
        One line, for help texts.
    needs_data
        Whether it measures the model on ``data``.

    Examples
    --------
    >>> ALLOCATIONS["energy"].needs_data, [n for n, a in ALLOCATIONS.items() if a.needs_data]
    (False, ['sensitivity'])
    """

    function: Callable[..., Any]
    description: str
    needs_data: bool = False

    def run(self, layers: Sequence[LayerChoices], budget: float, kind: str, **context: Any
            ) -> tuple[list[Option], list[float | None] | None, dict[str, Any]]:
        """The options, the per-layer predicted drops (``None`` without data) and the report
        fields; ``context`` (``model``, ``data``, ...) goes to modes that need data only."""
        if not self.needs_data:
            return self.function(layers, budget, kind), None, {}
        return self.function(layers, budget, kind, **context)


#: Valid ``allocate`` values of :func:`tnconv.compress`: name -> :class:`Allocation`.
ALLOCATIONS: Registry[Allocation] = Registry("allocation", {
    "uniform": Allocation(allocate_uniform, "one kept fraction of every layer's cost (no data)"),
    "energy": Allocation(allocate_energy, "one threshold on the discarded energy (no data)"),
    "vbmf": Allocation(allocate_vbmf, "EVBMF ranks scaled by one common factor (no data)"),
    "sensitivity": Allocation(allocate_sensitivity, "measured accuracy drops on data: "
                              "knapsacks and the other modes, the best measured kept",
                              needs_data=True),
})


def _plain() -> tuple[str, ...]:
    """The allocations that need no data (the baselines every sensitivity run includes)."""
    return tuple(n for n, a in ALLOCATIONS.items() if not a.needs_data)
