"""Per-layer sensitivity, measured on the options themselves, and whole-allocation checks.

:func:`probe_plan` picks, per layer, a few options to measure: in the layer's
``PROBE_FAMILIES`` best weight-fitted families (error per unit of cost, :meth:`Family.area`)
plus its best spatially separable cut (``out,kh|in,kw`` or ``out,kw|in,kh``: the fastest
forward form on CPUs) and its data-fitted family when it has one (:mod:`.datafit`), the
most accurate option within each of :data:`PROBE_FRACTIONS` of the layer's dense cost.
:class:`Evaluator` measures each probe on ``data`` with only that layer changed (its kernel
replaced by the one the factored layer computes; the prefix of the model before the
layer is evaluated once per layer, :class:`tnconv.evaluation.prefix.PrefixRunner`), and whole
allocations (every layer changed at once: one pass over ``data`` each).

:func:`probe_curves` turns each (layer, family) into a :class:`DropCurve`: the measured score
``accuracy drop + LOSS_WEIGHT * loss increase`` (negative parts clipped to 0) as a
non-decreasing function of the option's error (of the kernel; of the response for a data
fit), which within one family is a function of the
rank. The cross-entropy term separates options whose accuracy drops tie at 0 on the
evaluation images.

Everything measured is kept in one JSON file under ``runtime.cache_dir("compress")`` named by
a hash of the model's weights and the data (:mod:`tnconv.evaluation.fingerprint`): probes and
allocations measured once are read back, and the output moments of the data fits from a
``.pt`` file beside it (pass ``cache=False`` to re-measure). Latencies are
not kept: timings of two runs do not compare, so each run times its candidates again.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..runtime import atomic_write, cache_dir
from .candidates import LayerChoices, Option, build_layer

__all__ = ["PROBE_FRACTIONS", "PROBE_FAMILIES", "LOSS_WEIGHT", "DropCurve", "probe_plan",
           "probe_curves", "Evaluator", "option_id"]

#: Kept fractions of a layer's dense cost at which each probed family is measured.
PROBE_FRACTIONS: tuple[float, ...] = (0.45, 0.25, 0.12, 0.05)
#: Families probed per layer (the best by error per cost), besides the best separable cut.
PROBE_FAMILIES = 1
#: Weight of the cross-entropy increase (nats) in the drop score.
LOSS_WEIGHT = 0.1
_SEPARABLE = ("svd out,kh|in,kw", "svd out,kw|in,kh")
_VERSION = 1


class DropCurve:
    """Predicted accuracy drop of one layer as a function of its kernel's relative error.

    The measured drops (negative ones clipped to 0), made non-decreasing in the error and
    interpolated linearly from ``(0, 0)`` up to ``(1, baseline)`` (a zero kernel is assumed
    to lose everything).

    Examples
    --------
    >>> curve = DropCurve([0.1, 0.5], [0.0, 0.2], baseline=0.9)
    >>> round(curve(0.3), 3), round(curve(0.0), 3), round(curve(1.0), 3)
    (0.1, 0.0, 0.9)
    """

    def __init__(self, errors: Sequence[float], drops: Sequence[float], *,
                 baseline: float) -> None:
        pts = sorted(zip(map(float, errors), (max(float(d), 0.0) for d in drops)))
        xs, ys = [0.0], [0.0]
        for e, d in pts:
            if e <= xs[-1]:
                ys[-1] = max(ys[-1], d)
                continue
            xs.append(e)
            ys.append(max(ys[-1], d))
        if xs[-1] < 1.0:
            xs.append(1.0)
            ys.append(max(ys[-1], float(baseline)))
        self.errors, self.drops = np.array(xs), np.array(ys)

    def __call__(self, error: float) -> float:
        return float(np.interp(error, self.errors, self.drops))


def option_id(name: str, option: Option) -> str:
    """A stable text key of one layer's option (``"block1.conv svd out|in,kh,kw 4"``)."""
    return f"{name} {option.key} {'x'.join(map(str, option.ranks))}"


def _probe_families(lc: LayerChoices, kind: str, families: int) -> list[Any]:
    ranked = sorted((f for f in lc.families if f.fit == "weights"), key=lambda f: f.area(kind))
    chosen = ranked[:families]
    separable = [f for f in ranked if f.key in _SEPARABLE]
    if separable and separable[0] not in chosen:
        chosen.append(separable[0])
    return chosen + [f for f in lc.families if f.fit == "data"]


def probe_plan(layers: Sequence[LayerChoices], kind: str, *,
               families: int = PROBE_FAMILIES,
               fractions: Sequence[float] = PROBE_FRACTIONS) -> dict[str, list[Option]]:
    """The options to measure per layer (layers without families get none).

    Examples
    --------
    >>> import torch
    >>> from tnconv.compression.candidates import LayerChoices, dense_option, layer_families
    >>> w = torch.randn(8, 8, 3, 3)
    >>> lc = LayerChoices("0", dense_option((8, 8, 3, 3), 0, None),
    ...                   layer_families(w, 0, None, method="svd", cuts=["out,kh|in,kw"]))
    >>> [(o.ranks, o.params) for o in probe_plan([lc], "params")["0"]]
    [((5,), 240), ((3,), 144), ((1,), 48)]
    """
    plan: dict[str, list[Option]] = {}
    for lc in layers:
        dense = lc.dense.cost(kind)
        opts: list[Option] = []
        for fam in _probe_families(lc, kind, families):
            grid = [o for o in fam.grid() if o.cost(kind) < dense]
            for frac in fractions:
                ok = [o for o in grid if o.cost(kind) <= frac * dense]
                if ok:
                    best = min(ok, key=lambda o: (o.error, o.cost(kind)))
                    if best not in opts:
                        opts.append(best)
        if opts:
            plan[lc.name] = opts
    return plan


def probe_curves(plan: dict[str, list[Option]], measured: dict[str, tuple[float, float]],
                 baseline: tuple[float, float]) -> dict[tuple[str, str], DropCurve]:
    """One :class:`DropCurve` of the drop score per (layer, family key) probed.

    ``measured[option_id]`` and ``baseline`` are ``(accuracy, loss)``.

    Examples
    --------
    >>> from tnconv.compression.candidates import Option
    >>> o = Option("svd", "out|in,kh,kw", (2,), 10, None, 0.5)
    >>> c = probe_curves({"a": [o]}, {option_id("a", o): (0.8, 1.0)}, (0.9, 0.5))
    >>> round(c[("a", "svd out|in,kh,kw")](0.25), 3)
    0.075
    """
    acc0, loss0 = baseline
    points: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for name, opts in plan.items():
        for o in opts:
            acc, loss = measured[option_id(name, o)]
            score = max(acc0 - acc, 0.0) + LOSS_WEIGHT * max(loss - loss0, 0.0)
            points.setdefault((name, o.key), []).append((o.error, score))
    return {k: DropCurve([e for e, _ in pts], [s for _, s in pts], baseline=acc0)
            for k, pts in points.items()}


class Evaluator:
    """Accuracy and loss on ``data`` of ``model`` with some layers' kernels replaced.

    The working copy, its :class:`~tnconv.evaluation.prefix.PrefixRunner` and every factored
    kernel are made on first use only, so a fully cached run evaluates nothing.

    Parameters
    ----------
    model
        The dense model (not modified).
    data
        Evaluation data, any form of :mod:`tnconv.data.loaders`.
    device
        Where to evaluate.
    cache
        Read and write the measurements under ``runtime.cache_dir("compress")``.
    """

    def __init__(self, model: nn.Module, data: Any, *, device: torch.device,
                 cache: bool = True) -> None:
        self.model, self.data, self.device = model, data, device
        self.path = self._path() if cache else None
        self.store: dict[str, Any] = {"probes": {}, "allocations": {}}
        if self.path is not None and self.path.is_file():
            self.store.update(json.loads(self.path.read_text()))
        self._runner: Any = None
        self._work: nn.Module | None = None
        self._kernels: dict[str, torch.Tensor] = {}

    def _path(self) -> Path:
        from ..evaluation.fingerprint import data_fingerprint, state_dict_hash

        fp = {"v": _VERSION, "model": state_dict_hash(self.model),
              "data": data_fingerprint(self.data), "loss_weight": LOSS_WEIGHT}
        key = hashlib.sha256(json.dumps(fp, sort_keys=True, default=str).encode()).hexdigest()
        return cache_dir("compress") / f"sensitivity-{key[:20]}.json"

    def save(self) -> None:
        """Write what was measured (when caching)."""
        if self.path is not None:
            text = json.dumps(self.store, indent=1, sort_keys=True).encode()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, lambda fh: fh.write(text))

    def moments(self, names: Sequence[str], compute: Any) -> dict[str, torch.Tensor]:
        """The layers' output moments (:mod:`.datafit`): read from a ``.pt`` file beside the
        JSON when caching, else ``compute()`` (and written there)."""
        path = None if self.path is None else self.path.with_suffix(".moments.pt")
        if path is not None and path.is_file():
            found = torch.load(path, map_location="cpu", weights_only=True)
            if all(n in found for n in names):
                return {n: found[n] for n in names}
        found = compute()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda fh: torch.save(found, fh))
        return found

    def _setup(self) -> Any:
        if self._runner is None:
            from ..evaluation.prefix import PrefixRunner, default_cache_bytes

            self._work = copy.deepcopy(self.model).to(self.device).eval()
            for p in self._work.parameters():
                p.requires_grad_(False)
            self._runner = PrefixRunner(self._work, self.data, device=self.device,
                                        cache_bytes=default_cache_bytes(self.device))
        return self._runner

    def _kernel(self, name: str, option: Option) -> torch.Tensor:
        key = option_id(name, option)
        if key not in self._kernels:
            conv = self._work.get_submodule(name)  # type: ignore[union-attr]
            with torch.no_grad():
                self._kernels[key] = build_layer(conv, option).kernel().detach()
        return self._kernels[key]

    @property
    def baseline(self) -> tuple[float, float]:
        """``(accuracy, loss)`` of the dense model."""
        if "baseline" not in self.store:
            m = self._setup().evaluate()
            self.store["baseline"] = [m["accuracy"], m["loss"]]
        return tuple(self.store["baseline"])  # type: ignore[return-value]

    @torch.no_grad()
    def _swapped(self, changes: dict[str, Option], stage: int | None) -> tuple[float, float]:
        runner = self._setup()
        saved = {}
        try:
            for name, o in changes.items():
                w = self._work.get_submodule(name).weight  # type: ignore[union-attr]
                saved[name] = w.detach().clone()
                w.copy_(self._kernel(name, o))
            m = runner.evaluate_from(stage) if stage is not None else runner.evaluate()
        finally:
            for name, w0 in saved.items():
                self._work.get_submodule(name).weight.copy_(w0)  # type: ignore[union-attr]
        return float(m["accuracy"]), float(m["loss"])

    def probes(self, plan: dict[str, list[Option]], *, progress: bool
               ) -> dict[str, tuple[float, float]]:
        """``(accuracy, loss)`` of each probe, one layer changed at a time."""
        self.baseline  # noqa: B018 - measured (and cached) first
        done = self.store["probes"]
        todo = [(n, o) for n, opts in plan.items() for o in opts if option_id(n, o) not in done]
        if todo:
            runner = self._setup()
            stages = {n: runner.stage_of(self._work.get_submodule(n)) for n, _ in todo}
            todo.sort(key=lambda t: (stages[t[0]] is None, stages[t[0]] or 0))
            for n, o in tqdm(todo, desc="compress: sensitivity", unit="probe",
                             disable=not progress, dynamic_ncols=True):
                done[option_id(n, o)] = list(self._swapped({n: o}, stages[n]))
            self._kernels.clear()
            self.save()
        return {option_id(n, o): tuple(done[option_id(n, o)])
                for n, opts in plan.items() for o in opts}

    def allocation(self, names: Sequence[str], options: Sequence[Option]) -> tuple[float, float]:
        """``(accuracy, loss)`` with every layer of ``names`` set to its option."""
        changes = {n: o for n, o in zip(names, options, strict=True) if o.method != "dense"}
        key = " ; ".join(sorted(option_id(n, o) for n, o in changes.items()))
        if key not in self.store["allocations"]:
            self.store["allocations"][key] = list(self._swapped(changes, None))
        return tuple(self.store["allocations"][key])  # type: ignore[return-value]
