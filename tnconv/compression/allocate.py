"""Choosing one option per layer so that the selected layers meet a budget.

Each function takes, per layer, what :mod:`.candidates` offers (a
:class:`~.candidates.LayerChoices`: families of factorizations and the dense option), a cost
``kind`` (``"params"`` or ``"flops"``) and a total ``budget`` in that unit, and returns one
:class:`~.families.Option` per layer whose costs sum to at most the budget (as close to it as
that mode's discrete choices allow):

* :func:`allocate_uniform`: one family per layer (the best error per parameter), then the same
  kept fraction ``f`` of the layer's cost in every layer; bisection on ``f``;
* :func:`allocate_energy`: one threshold ``t`` on the normalised discarded energy
  ``error**2`` shared by every layer (each takes its cheapest option within ``t``);
  bisection on ``t`` over the options' own values;
* :func:`allocate_vbmf`: the EVBMF ranks of each layer's family scaled by one common factor
  ``c`` (bisection on ``c``);
* :func:`allocate_min_loss`: the options minimising a sum of per-layer losses (predicted
  accuracy drops) under the budget: a multiple-choice knapsack solved by dynamic programming
  over the budget cut into ``bins`` units (costs rounded up, so the budget holds);
* :func:`allocate_max_error`: each layer's cheapest option within a relative error.

The first three are the data-free ``allocate=`` modes of :func:`tnconv.compress`; the registry
of every mode, ``sensitivity`` included, is :data:`tnconv.compression.choose.ALLOCATIONS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from .candidates import LayerChoices
from .families import Family, Option

__all__ = ["allocate_uniform", "allocate_energy", "allocate_vbmf", "fill_budget",
           "allocate_min_loss", "allocate_max_error", "total_cost"]


def total_cost(choice: Sequence[Option], kind: str) -> float:
    """Sum of the options' costs."""
    return float(sum(o.cost(kind) for o in choice))


def _cheapest(options: Sequence[Option], kind: str) -> Option:
    return min(options, key=lambda o: (o.cost(kind), o.error))


def _bisect(values: Sequence[float], total: Callable[[float], float], budget: float,
            increasing: bool) -> float:
    """The value of ``values`` (sorted) with the largest total within budget.

    ``total`` is non-decreasing in the value when ``increasing``, else non-increasing.
    """
    lo, hi = 0, len(values) - 1
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        ok = total(values[mid]) <= budget
        if ok:
            best = mid
        if ok == increasing:
            lo = mid + 1
        else:
            hi = mid - 1
    if best is None:
        return values[0] if increasing else values[-1]
    return values[best]


def _fits(options: Sequence[Option], limit: float, kind: str) -> Option:
    """The smallest-error option costing at most ``limit`` (else the cheapest)."""
    ok = [o for o in options if o.cost(kind) <= limit]
    if not ok:
        return _cheapest(options, kind)
    return min(ok, key=lambda o: (o.error, o.cost(kind)))


def fill_budget(layers: Sequence[LayerChoices], choice: Sequence[Option], budget: float,
                kind: str, *, fill: float = 0.98) -> list[Option]:
    """``choice`` with single layers raised until ``fill * budget``.

    While the total is under ``fill * budget``, the one-layer change of a factored layer
    (dense ones stay) to a more accurate option of that layer (any family: a finer rank step
    may fit where the layer's own family's does not) that fits the budget and removes the
    most squared error per added cost is made. Stops when none fits.

    Examples
    --------
    >>> import torch
    >>> from tnconv.compression.candidates import LayerChoices, SVDFamily, dense_option
    >>> w = torch.randn(8, 8, 1, 1)
    >>> fam = SVDFamily(w, 0, None, "out|in,kh,kw")
    >>> layer = LayerChoices("0", dense_option((8, 8, 1, 1), 0, None), [fam])
    >>> [o.ranks for o in fill_budget([layer], [fam.option((1,))], 48.0, "params")]
    [(3,)]
    """
    out, spent = list(choice), total_cost(choice, kind)
    grids = [lc.options(kind) for lc in layers]
    while spent < fill * budget:
        best: tuple[float, int, Option] | None = None
        for i, cur in enumerate(out):
            if cur.method == "dense":
                continue
            for o in grids[i]:
                extra = o.cost(kind) - cur.cost(kind)
                if extra <= 0 or spent + extra > budget or o.error >= cur.error:
                    continue
                gain = (cur.error ** 2 - o.error ** 2) / extra
                if best is None or gain > best[0]:
                    best = (gain, i, o)
        if best is None:
            break
        _, i, o = best
        spent += o.cost(kind) - out[i].cost(kind)
        out[i] = o
    return out


def allocate_uniform(layers: Sequence[LayerChoices], budget: float, kind: str) -> list[Option]:
    """The same kept fraction of every layer's cost, in each layer's best family.

    Examples
    --------
    >>> import torch
    >>> from tnconv.compression.candidates import LayerChoices
    >>> layer = LayerChoices.svd("0", torch.randn(8, 8, 1, 1))
    >>> [o.ranks for o in allocate_uniform([layer], 32.0, "params")]
    [(2,)]
    """
    per_layer = []
    for layer in layers:
        fam = layer.best_family(kind)
        opts = [o for o in (fam.grid() if fam else []) if o.cost(kind) < layer.dense.cost(kind)]
        per_layer.append((layer.dense, [*opts, layer.dense]))
    fractions = sorted({o.cost(kind) / d.cost(kind) for d, opts in per_layer for o in opts})

    def pick(f: float) -> list[Option]:
        return [_fits(opts, f * d.cost(kind) * (1 + 1e-12), kind) for d, opts in per_layer]

    chosen = pick(_bisect(fractions, lambda f: total_cost(pick(f), kind), budget, True))
    return fill_budget(layers, chosen, budget, kind)


def allocate_energy(layers: Sequence[LayerChoices], budget: float, kind: str) -> list[Option]:
    """One threshold on the discarded energy ``error**2`` shared by every layer.

    Examples
    --------
    >>> import torch
    >>> from tnconv.compression.candidates import LayerChoices
    >>> layer = LayerChoices.svd("0", torch.randn(8, 8, 1, 1))
    >>> [o.ranks for o in allocate_energy([layer], 32.0, "params")]
    [(2,)]
    """
    options = [layer.options(kind) for layer in layers]
    thresholds = sorted({o.error ** 2 for opts in options for o in opts})

    def pick(t: float) -> list[Option]:
        return [_cheapest([o for o in opts if o.error ** 2 <= t * (1 + 1e-12)], kind)
                for opts in options]

    chosen = pick(_bisect(thresholds, lambda t: total_cost(pick(t), kind), budget, False))
    return fill_budget(layers, chosen, budget, kind)


def allocate_vbmf(layers: Sequence[LayerChoices], budget: float, kind: str) -> list[Option]:
    """EVBMF ranks of each layer's best family, all scaled by one common factor.

    The EVBMF ranks (:func:`tnconv.evbmf`) give a budget of their own; the
    factor ``c`` (bisection) scales every rank to ``round(c * r)`` (within ``1 .. full``) so
    that the total meets ``budget``. Layers whose scaled option is not cheaper than dense
    stay dense.
    """
    fams = [layer.best_family(kind) for layer in layers]
    base = [f.vbmf_ranks() if f is not None else () for f in fams]

    def cost(c: float | Sequence[float]) -> float:
        scales = [c] * len(layers) if isinstance(c, float) else c
        return sum(_scaled_cost(layer, f, b, k, kind)
                   for layer, f, b, k in zip(layers, fams, base, scales, strict=True))

    lo = 0.0
    hi = 2.0 * max((max(f.full) / max(min(b), 1) for f, b in zip(fams, base, strict=True) if f),
                   default=1.0)
    for _ in range(60):  # the largest common factor within budget
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cost(mid) <= budget else (lo, mid)
    chosen = _top_up(layers, fams, base, lo, budget, kind, cost)
    out = []
    for layer, f, r in zip(layers, fams, chosen, strict=True):
        opt = f.option(r) if f is not None else layer.dense  # type: ignore[arg-type]
        out.append(opt if opt.cost(kind) < layer.dense.cost(kind) else layer.dense)
    return fill_budget(layers, out, budget, kind)


def _scaled_ranks(f: Family, base: tuple[int, ...], c: float) -> tuple[int, ...]:
    return f.clip(tuple(round(c * r) for r in base))


def _scaled_cost(layer: LayerChoices, f: Family | None, base: tuple[int, ...], c: float,
                 kind: str) -> float:
    """Cost of ``layer`` at its EVBMF ranks times ``c`` (dense when that is cheaper)."""
    dense = layer.dense.cost(kind)
    if f is None:
        return dense
    params, flops = f.costs(_scaled_ranks(f, base, c))
    value = params + f.bias if kind == "params" else (math.nan if flops is None else flops)
    return min(value, dense)


def _top_up(layers: Sequence[LayerChoices], fams: Sequence[Family | None],
            base: Sequence[tuple[int, ...]], c: float, budget: float, kind: str,
            cost: Callable[[Sequence[float]], float]) -> list[tuple[int, ...] | None]:
    """Raise the factor of single layers past ``c`` while the budget allows.

    The common factor stops where the next layer's rounded ranks would break the budget;
    layers whose ranks change later (at a larger factor) may still fit. Each step takes the
    layer whose ranks change at the smallest factor and fit, so the result stays as close
    to one common scaling as the budget allows.
    """
    scales = [c] * len(layers)
    while True:
        steps = []
        for i, (f, b) in enumerate(zip(fams, base, strict=True)):
            if f is None or _scaled_ranks(f, b, scales[i]) == f.clip(tuple(f.full)):
                continue
            nxt = min((round(scales[i] * r) + 0.5) / r for r in b) * (1 + 1e-9)
            trial = [*scales[:i], nxt, *scales[i + 1:]]
            if cost(trial) <= budget:
                steps.append((nxt, i))
        if not steps:
            break
        nxt, i = min(steps)
        scales[i] = nxt
    return [None if f is None else _scaled_ranks(f, b, k)
            for f, b, k in zip(fams, base, scales, strict=True)]


def allocate_min_loss(layers: Sequence[LayerChoices], budget: float, kind: str,
                      loss: Callable[[int, Option], float], *, bins: int = 2000
                      ) -> list[Option]:
    """Minimise ``sum_i loss(i, option_i)`` with costs summing to at most ``budget``.

    A multiple-choice knapsack by dynamic programming over ``bins`` budget units (each cost
    rounded up to whole units, so the result never exceeds the budget). Ties in loss go to
    the smaller error.

    Examples
    --------
    >>> import torch
    >>> from tnconv.compression.candidates import LayerChoices
    >>> layer = LayerChoices.svd("0", torch.randn(8, 8, 1, 1))
    >>> [o.ranks for o in allocate_min_loss([layer], 32.0, "params", lambda i, o: o.error)]
    [(2,)]
    """
    unit = budget / bins
    inf = math.inf
    best = np.zeros(bins + 1)
    back: list[tuple[list[Option], np.ndarray]] = []
    for i, layer in enumerate(layers):
        opts = _pareto(layer.options(kind), kind, lambda o, i=i: loss(i, o))
        new = np.full(bins + 1, inf)
        arg = np.full(bins + 1, -1, dtype=np.int64)
        for k, o in enumerate(opts):
            units = math.ceil(o.cost(kind) / unit - 1e-9)
            if units > bins:
                continue
            value = loss(i, o) + 1e-6 * o.error
            cand = np.full(bins + 1, inf)
            cand[units:] = best[: bins + 1 - units] + value
            better = cand < new
            new[better], arg[better] = cand[better], k
        back.append((opts, arg))
        best = new
    if not np.isfinite(best[bins]):
        raise ValueError("no choice of options meets the budget")
    out: list[Option] = []
    b = bins
    for opts, arg in reversed(back):
        o = opts[int(arg[b])]
        out.append(o)
        b -= math.ceil(o.cost(kind) / unit - 1e-9)
    return out[::-1]


def _pareto(options: Sequence[Option], kind: str, loss: Callable[[Option], float]
            ) -> list[Option]:
    """Options not beaten in both cost and (loss, error) by a cheaper one."""
    out, floor = [], (math.inf, math.inf)
    for o in sorted(options, key=lambda o: (o.cost(kind), loss(o), o.error)):
        key = (loss(o), o.error)
        if key < floor:
            out.append(o)
            floor = key
    return out


def allocate_max_error(layers: Sequence[LayerChoices], max_error: float, kind: str
                       ) -> list[Option]:
    """Each layer's cheapest option whose relative error is at most ``max_error``.

    Examples
    --------
    >>> import torch
    >>> from tnconv.compression.candidates import LayerChoices
    >>> w = torch.diag(torch.tensor([4.0, 3.0] + [0.1] * 6))[:, :, None, None]
    >>> layer = LayerChoices.svd("0", w)
    >>> [o.ranks for o in allocate_max_error([layer], 0.1, "params")]
    [(2,)]
    """
    return [_cheapest([o for o in layer.options(kind) if o.error <= max_error * (1 + 1e-12)],
                      kind) for layer in layers]
