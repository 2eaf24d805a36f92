"""The sweep engine: what the local and the Ray executors of :func:`tnconv.sweep` share.

The rows' fields and keys, the checks of a sweep's arguments, the work list (``sweep_todo``),
the working copy of the model, the row sink that appends and resumes ``out=`` files
(:class:`RowSink`), and the loops that compute rows from a :class:`PrefixRunner`
(``run_single``, ``run_all``). :mod:`tnconv.study.sweep` (this process) and
:mod:`tnconv.study.distributed` (Ray tasks) both import this module; it imports neither.

Examples
--------
>>> row_key({"mode": "single", "layer": "0", "cut": "out|in,kh,kw", "criterion": "keep",
...          "level": 0.5})
('single', '0', 'out|in,kh,kw', 'keep', 0.5)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..cuts import all_cuts, parse_cut
from ..decomp import Criteria
from ..evaluation.prefix import PrefixRunner
from ..legs import kernel_legs
from ..records import Records, RowLog
from ..truncation import CutSVD
from .model_truncation import LayerSpec, combined_errors, select_layers

__all__ = ["ALL_LAYERS", "DEFAULT_LEVELS", "LEVEL_CRITERIA", "RowSink", "SWEEP_EXECUTORS",
           "SWEEP_DEFAULTS", "SWEEP_FIELDS", "SWEEP_MODES", "check_sweep_args", "check_sweep_call",
           "row_key",
           "run_all", "run_single", "sweep_options", "sweep_todo", "working_copy"]

#: Default levels: fractions of the singular values kept (``criterion="keep"``).
DEFAULT_LEVELS: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.1, 0.05)
#: Valid ``mode`` values.
SWEEP_MODES = ("single", "all")
#: Valid ``executor`` values: this process, or tasks on a Ray cluster (:mod:`.distributed`).
SWEEP_EXECUTORS = ("local", "ray")
#: Criteria a level can stand for (see :func:`tnconv.truncate`).
LEVEL_CRITERIA = ("keep", "max_bond", "max_error", "cutoff")
#: Columns of a sweep row, in file order.
SWEEP_FIELDS = (
    "mode", "layer", "index", "kind", "shape", "cut", "criterion", "level", "rank", "full_rank",
    "rel_error", "norm_loss", "entropy_before", "entropy_after", "params_after",
    "params_before", "compression_ratio", "n_layers", "accuracy", "loss", "n", "baseline_accuracy",
    "baseline_loss", "accuracy_drop",
)
#: Columns renamed since older files were written (old -> new; such files still resume).
RENAMED_FIELDS = {"params_factored": "params_after",
                  "params_dense": "params_before", "compression": "compression_ratio"}
_STRING_FIELDS = ("mode", "layer", "kind", "shape", "cut", "criterion")
ALL_LAYERS = "(all)"


def row_key(row: dict[str, Any]) -> tuple:
    return (row["mode"], str(row["layer"]), row["cut"], row["criterion"], float(row["level"]))


def _matrix_key(weight: torch.Tensor, cut: str) -> tuple[frozenset[str], frozenset[str]]:
    """Cuts with the same key give the same matrix (legs of size 1 do not matter)."""
    legs = kernel_legs(weight)
    size = dict(zip(legs, weight.shape))
    left, right = parse_cut(cut, legs, max_groups=2)
    return (frozenset(n for n in left if size[n] > 1), frozenset(n for n in right if size[n] > 1))


def _layer_cuts(name: str, weight: torch.Tensor, cuts: str | Sequence[str]) -> list[str]:
    legs = kernel_legs(weight)
    if cuts == "all":
        return all_cuts(legs)
    out = []
    for c in cuts:
        try:
            out.append("|".join(",".join(g) for g in parse_cut(c, legs, max_groups=2)))
        except ValueError as exc:
            raise ValueError(f"cut {c!r} does not fit layer {name!r} with legs {legs}: {exc}"
                             ) from exc
    if len(set(out)) != len(out):  # the same cut twice would give the same rows twice
        raise ValueError(f"cuts must be distinct, got {list(cuts)} (as {out})")
    return out


def check_sweep_args(mode: str, criterion: str, levels: Sequence[Any], cuts: Any) -> list[Any]:
    if mode not in SWEEP_MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(SWEEP_MODES)}")
    if criterion not in LEVEL_CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; valid: {', '.join(LEVEL_CRITERIA)}")
    if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence) or not levels:
        raise TypeError(f"levels must be a non-empty sequence of {criterion} values, "
                        f"got {levels!r}")
    for level in levels:
        Criteria.from_mapping({criterion: level})
    if len(set(map(float, levels))) != len(levels):
        raise ValueError(f"levels must be distinct, got {list(levels)}")
    if not (cuts == "all" or (isinstance(cuts, Sequence) and not isinstance(cuts, str)
                              and cuts and all(isinstance(c, str) for c in cuts))):
        raise ValueError(f"cuts must be 'all' or a non-empty list of cut strings, got {cuts!r}")
    return list(levels)


def _progress(total: int, enabled: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True, smoothing=0.1)


class _Swap:
    """Put a kernel into a layer in place; restore the original on exit."""

    def __init__(self, modules: Sequence[nn.Module], kernels: Sequence[torch.Tensor]) -> None:
        self.modules, self.kernels = modules, kernels
        self.saved: list[torch.Tensor] = []

    def __enter__(self) -> None:
        with torch.no_grad():
            for m, k in zip(self.modules, self.kernels):
                self.saved.append(m.weight.detach().clone())
                m.weight.copy_(k)

    def __exit__(self, *exc: object) -> None:
        with torch.no_grad():
            for m, k in zip(self.modules, self.saved):
                m.weight.copy_(k)


#: The keyword options of :func:`tnconv.sweep` and their defaults (a test checks that they
#: match its signature).
SWEEP_DEFAULTS: dict[str, Any] = {
    "layers": None, "cuts": "all", "levels": DEFAULT_LEVELS, "criterion": "keep",
    "mode": "single", "out": None, "include_linear": False, "batch_size": 1000, "device": None,
    "amp": None, "cache_bytes": None, "use_prefix": True, "reuse_svd": True, "progress": True,
    "callback": None, "executor": "local", "ray_address": None,
}


def sweep_options(options: dict[str, Any]) -> dict[str, Any]:
    """The keyword options of :func:`sweep` with its defaults filled in (another executor's
    entry point takes them as ``**options``); an unknown option is a TypeError.

    Examples
    --------
    >>> sweep_options({"mode": "all"})["levels"]
    (1.0, 0.75, 0.5, 0.25, 0.1, 0.05)
    """
    bad = [k for k in options if k not in SWEEP_DEFAULTS]
    if bad:
        raise TypeError(f"unexpected sweep option(s) {bad}; valid: {', '.join(SWEEP_DEFAULTS)}")
    return {**SWEEP_DEFAULTS, **options}


def working_copy(model: nn.Module, layers: LayerSpec, include_linear: bool,
                 device: torch.device) -> tuple[nn.Module, dict[str, int], list[tuple[str, Any]]]:
    """A frozen eval-mode copy of ``model`` on ``device``, the position of each of its conv
    layers (``index`` of the rows) and the chosen ``(name, module)`` pairs of the copy."""
    work = copy.deepcopy(model).to(device).eval()
    for p in work.parameters():
        p.requires_grad_(False)
    index = {n: i for i, (n, _) in enumerate(select_layers(work, None,
                                                            include_linear=include_linear))}
    # select on the given model (a predicate may compare modules), work on the copy
    chosen = [(n, work.get_submodule(n))
              for n, _ in select_layers(model, layers, include_linear=include_linear)]
    return work, index, chosen


def check_sweep_call(model: Any, batch_size: Any, callback: Any) -> None:
    """Arguments of :func:`sweep` checked before any work (and before the first row)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable (callback(row)) or None, got "
                        f"{type(callback).__name__}")


class RowSink:
    """Where new rows go: the returned Records, the resumable file, the bar and the callback.

    With a file, it holds the file's lock from construction to :meth:`close`, and ``meta`` is
    the fingerprint stored beside the rows (None if there is none).
    """

    def __init__(self, out: Any, callback: Callable[[dict[str, Any]], None] | None) -> None:
        self.log = (RowLog(out, SWEEP_FIELDS, string_fields=_STRING_FIELDS, key=row_key,
                          renamed=RENAMED_FIELDS)
                    if out is not None else None)
        self.meta: dict[str, Any] | None = None
        rows: list[dict[str, Any]] = []
        if self.log is not None:
            self.log.lock()
            try:
                rows, self.meta = self.log.read(), self.log.read_meta()
            except BaseException:
                self.log.unlock()
                raise
        self.rows = Records(rows)
        self.done = {row_key(r) for r in self.rows}
        self.callback = callback
        self.bar: Any = None

    def open(self, total: int, progress: bool, desc: str, info: dict[str, Any],
             fingerprint: dict[str, Any]) -> None:
        self.info = info
        self.bar = _progress(total, progress, desc)
        if self.log is not None:
            if self.meta != fingerprint:  # a new file, an old file without one, or no rows
                self.log.write_meta(fingerprint)
            self.log.open()

    def emit(self, row: dict[str, Any]) -> None:
        row = {f: row.get(f) for f in SWEEP_FIELDS}
        self.rows.append(row)
        self.done.add(row_key(row))
        self.info["rows_new"] += 1
        if self.log is not None:
            self.log.append(row)
        self.bar.update(1)
        if self.callback is not None:
            self.callback(row)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.log is not None:
            self.log.close()


def sweep_todo(mode: str, chosen: list[tuple[str, nn.Module]], cuts: Any, levels: list[Any],
          criterion: str, done: set) -> list[tuple[str, Any, str, Any]]:
    """The (layer, module, cut, level) rows still to compute (rows in ``done`` are skipped)."""
    layer_cuts = {n: _layer_cuts(n, m.weight, cuts) for n, m in chosen}
    if mode == "single":
        return [(n, m, c, lv) for n, m in chosen for c in layer_cuts[n] for lv in levels
                if ("single", n, c, criterion, float(lv)) not in done]
    cut_list = layer_cuts[chosen[0][0]]
    for n, _ in chosen:
        if layer_cuts[n] != cut_list:
            raise ValueError(f"mode='all' needs the same cuts for every layer; layer {n!r} "
                             f"has {layer_cuts[n]}, {chosen[0][0]!r} has {cut_list}")
    return [(ALL_LAYERS, None, c, lv) for c in cut_list for lv in levels
            if ("all", ALL_LAYERS, c, criterion, float(lv)) not in done]


def _metrics_row(metrics: dict[str, float], base: dict[str, float]) -> dict[str, Any]:
    return {"accuracy": metrics["accuracy"], "loss": metrics["loss"], "n": metrics["n"], **base,
            "accuracy_drop": base["baseline_accuracy"] - metrics["accuracy"]}


def run_single(todo: list, runner: PrefixRunner, criterion: str, reuse_svd: bool,
                index: dict[str, int], base: dict[str, float], info: dict[str, Any],
                emit: Callable[[dict[str, Any]], None]) -> None:
    modules = {n: m for n, m, _, _ in todo}  # one entry per layer, not per (cut, level) row
    stage = {n: runner.stage_of(m) for n, m in modules.items()}
    # group by block (stable: model order inside a block) so each cache serves all its layers
    order = sorted(range(len(todo)), key=lambda i: (stage[todo[i][0]] is None,
                                                    stage[todo[i][0]] or 0, i))
    svds: dict[tuple, CutSVD] = {}
    evals: dict[tuple, dict[str, float]] = {}
    current = None
    for i in order:
        name, module, cut, level = todo[i]
        if name != current:  # a new layer: drop the previous layer's SVDs and results
            svds.clear()
            evals.clear()
            current = name
        mkey = _matrix_key(module.weight, cut) if reuse_svd else (cut, level)
        svd = svds.get(mkey)
        if svd is None:
            svd = CutSVD(module.weight.detach(), cut)
            info["svds"] += 1
            if reuse_svd:
                svds[mkey] = svd
        rank = svd.rank(**{criterion: level})
        report = svd.report(rank).as_dict()
        report["cut"] = cut
        if rank == svd.full_rank and reuse_svd:
            metrics = {"accuracy": base["baseline_accuracy"], "loss": base["baseline_loss"],
                       "n": runner.n}
        elif rank == svd.full_rank:  # naive reference: evaluate the untouched model anyway
            metrics = runner.evaluate()
            info["evaluations"] += 1
        elif reuse_svd and (mkey, rank) in evals:
            metrics = evals[(mkey, rank)]
        else:
            with _Swap([module], [svd.reconstruct(rank)]):
                s = stage[name]
                metrics = runner.evaluate_from(s) if s is not None else runner.evaluate()
            info["evaluations"] += 1
            if reuse_svd:
                evals[(mkey, rank)] = metrics
        emit({"mode": "single", "layer": name, "index": index.get(name),
              "kind": type(module).__name__, "criterion": criterion, "level": level,
              "n_layers": 1, **report, **_metrics_row(metrics, base)})


def run_all(todo: list, chosen: list[tuple[str, nn.Module]], runner: PrefixRunner,
             criterion: str, reuse_svd: bool, base: dict[str, float], info: dict[str, Any],
             emit: Callable[[dict[str, Any]], None]) -> None:
    modules = [m for _, m in chosen]
    stages = [runner.stage_of(m) for m in modules]
    first = None if any(s is None for s in stages) else min(stages)
    svds: dict[str, list[CutSVD]] = {}
    for _, _, cut, level in todo:
        if cut not in svds or not reuse_svd:
            svds.clear()
            svds[cut] = [CutSVD(m.weight.detach(), cut) for m in modules]
            info["svds"] += len(modules)
        layer_svds = svds[cut]
        ranks = [s.rank(**{criterion: level}) for s in layer_svds]
        reports = [s.report(r) for s, r in zip(layer_svds, ranks)]
        if all(r == s.full_rank for r, s in zip(ranks, layer_svds)):
            if reuse_svd:
                metrics = {"accuracy": base["baseline_accuracy"], "loss": base["baseline_loss"],
                           "n": runner.n}
            else:  # naive reference: evaluate the untouched model anyway
                metrics = runner.evaluate()
                info["evaluations"] += 1
            rel_error, norm_loss = 0.0, 0.0
        else:
            kernels = [s.reconstruct(r) if r < s.full_rank else m.weight.detach()
                       for s, r, m in zip(layer_svds, ranks, modules)]
            rel_error, norm_loss = combined_errors([m.weight for m in modules], kernels)
            with _Swap(modules, kernels):
                metrics = runner.evaluate_from(first) if first is not None else runner.evaluate()
            info["evaluations"] += 1
        factored = sum(r.params_after for r in reports)
        dense = sum(r.params_before for r in reports)
        emit({"mode": "all", "layer": ALL_LAYERS, "cut": cut, "criterion": criterion,
              "level": level, "rank": sum(ranks), "full_rank": sum(s.full_rank for s in layer_svds),
              "rel_error": rel_error, "norm_loss": norm_loss, "params_before": dense,
              "params_after": factored,
              "compression_ratio": dense / factored if factored else math.nan,
              "n_layers": len(modules), **_metrics_row(metrics, base)})
