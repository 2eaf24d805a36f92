"""Accuracy sweeps: truncate layers along cuts at several levels and evaluate each result.

:func:`sweep` runs two kinds of experiment:

* ``mode="single"``: each selected layer alone, for every (layer, cut, level);
* ``mode="all"``: every selected layer at once, for every (cut, level).

``executor="ray"`` computes the same rows as Ray tasks (:mod:`tnconv.study.distributed`).

Why it is fast
--------------
* One SVD per (layer, cut), reused for every level (:class:`tnconv.CutSVD`). Cuts that give the
  same matrix (for a 1 x 1 convolution ``out|in,kh,kw``, ``out,kh|in,kw``, ``out,kw|in,kh`` and
  ``out,kh,kw|in`` are one matrix) share the SVD and the evaluations.
* Keeping every singular value (``rank == full_rank``) leaves the kernel as it is, so that row
  is the baseline and needs no evaluation (the naive reference, ``reuse_svd=False``, evaluates
  the untouched model there, with the same result).
* Only the stages after the truncated layer run, from activations cached at the input of its
  enclosing block (:class:`tnconv.study.prefix.PrefixRunner`); the accuracy is exactly that of
  a full evaluation, and models whose structure does not allow it are evaluated whole.
* The work is sorted by block so each cached activation serves all its layers; the kernel is
  swapped in place in one working copy of the model and restored afterwards.
* bf16 autocast on CUDA, large batches, data moved to the device once.

Resuming
--------
With ``out=`` (``.csv`` or ``.jsonl``) every row is appended and flushed as soon as it is
produced. Rows are keyed by ``(mode, layer, cut, criterion, level)``; a new run with the same
``out`` reads the file, drops a partially written last line, skips the rows already there and
appends the rest, so an interrupted sweep resumes with no row lost or duplicated. The rows are
reused only when the sweep is the same: its fingerprint (a hash of the model's weights and of
the data, the cuts, levels and criterion; :mod:`tnconv.study.fingerprint`) is kept in
``<out>.meta.json`` and a mismatch is refused, saying what differs. One sweep writes a file at
a time (a lock file, ``<out>.lock``); duplicate rows found on resuming are dropped with a
warning.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..cuts import all_cuts, parse_cut
from ..decomp import Criteria
from ..legs import kernel_legs
from ..records import Records, RowLog
from ..runtime import model_device, resolve_device
from ..truncation import CutSVD
from ..evaluation.fingerprint import check_resumable, sweep_fingerprint
from .model_truncation import LayerSpec, combined_errors, select_layers
from ..evaluation.prefix import PrefixRunner, default_cache_bytes

__all__ = ["sweep", "sweep_options", "SWEEP_FIELDS", "DEFAULT_LEVELS", "SWEEP_MODES",
           "LEVEL_CRITERIA", "SWEEP_EXECUTORS"]

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
    "rel_error", "norm_loss", "entropy_before", "entropy_after", "params_factored",
    "params_dense", "compression", "n_layers", "accuracy", "loss", "n", "baseline_accuracy",
    "baseline_loss", "accuracy_drop",
)
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


def sweep_options(options: dict[str, Any]) -> dict[str, Any]:
    """The keyword options of :func:`sweep` with its defaults filled in (another executor's
    entry point takes them as ``**options``); an unknown option is a TypeError.

    Examples
    --------
    >>> sweep_options({"mode": "all"})["levels"]
    (1.0, 0.75, 0.5, 0.25, 0.1, 0.05)
    """
    params = {k: p.default for k, p in inspect.signature(sweep).parameters.items()
              if p.kind is p.KEYWORD_ONLY}
    bad = [k for k in options if k not in params]
    if bad:
        raise TypeError(f"unexpected sweep option(s) {bad}; valid: {', '.join(params)}")
    return {**params, **options}


def sweep(
    model: nn.Module,
    data: Any,
    *,
    layers: LayerSpec = None,
    cuts: str | Sequence[str] = "all",
    levels: Sequence[float | int] = DEFAULT_LEVELS,
    criterion: str = "keep",
    mode: str = "single",
    out: str | os.PathLike | None = None,
    include_linear: bool = False,
    batch_size: int = 1000,
    device: str | torch.device | None = None,
    amp: bool | None = None,
    cache_bytes: int | None = None,
    use_prefix: bool = True,
    reuse_svd: bool = True,
    progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
    executor: str = "local",
    ray_address: str | None = None,
) -> Records:
    """Truncate layers along cuts at several levels and measure accuracy and loss.

    Parameters
    ----------
    model
        A trained classifier; never modified (the sweep works on a copy in eval mode).
    data
        Evaluation data in any form of :mod:`tnconv.data.loaders`: a
        :class:`tnconv.data.ImageDataset`, ``(images, labels)`` tensors, a map-style torch
        ``Dataset`` of ``(image, label)`` (``ImageFolder``, ``Subset``, ...), a ``DataLoader``
        (used as given) or an iterable of ``(x, y)`` batches. Datasets and loaders are
        streamed; only the activation cache is held, within ``cache_bytes``.
    layers
        Which layers (names, :mod:`fnmatch` patterns or a predicate; see
        :func:`tnconv.truncate_model`). Default: every convolution.
    cuts
        ``"all"`` (every bipartition of each kernel: 7 for Conv2d) or a list of cut strings.
    levels
        Values of ``criterion``; default ``(1.0, 0.75, 0.5, 0.25, 0.1, 0.05)`` kept fractions.
    criterion
        What a level means: ``"keep"``, ``"max_bond"``, ``"max_error"`` or ``"cutoff"``.
    mode
        ``"single"`` (each layer alone) or ``"all"`` (all selected layers at once).
    out
        A ``.csv`` or ``.jsonl`` file to append rows to; a run with the same ``out`` resumes.
    include_linear
        Also consider Linear layers.
    batch_size
        Evaluation batch size.
    device
        Where to evaluate; default the model's device. The data is moved there once.
    amp
        bf16 autocast; default on for CUDA, off on CPU.
    cache_bytes
        Memory budget of the prefix cache (bytes): the largest activation cache kept on the
        device, and the largest in-memory dataset moved there at once. Default: a quarter of
        the device memory (of the physical RAM on the CPU). Layers whose cache would exceed
        it are evaluated by streaming the data through the full model, with a warning; the
        rows are the same.
    use_prefix
        Evaluate only the stages after the truncated layer (``False``: the full model each time).
    reuse_svd
        One SVD per (layer, cut) shared by the levels and by equivalent cuts, and no
        evaluation for untruncated rows (``False``: a fresh SVD and an evaluation for every
        row, the naive reference).
    progress
        A tqdm bar with an ETA.
    callback
        ``callback(row)`` after each new row is written.
    executor
        ``"local"`` (this process) or ``"ray"``: tasks on a Ray cluster, one per (layer, cut)
        in single mode and per (cut, level) in all mode, the rows written here as they arrive
        (:func:`tnconv.study.distributed.ray_sweep`; ``pip install "tnconv[ray]"``).
    ray_address
        With ``executor="ray"``: the cluster to join (default ``RAY_ADDRESS``, else a local
        Ray instance).

    Returns
    -------
    Records
        Rows in :data:`SWEEP_FIELDS` order: ``mode, layer, index`` (position among the model's
        conv layers), ``kind, shape, cut, criterion, level, rank, full_rank, rel_error,
        norm_loss, entropy_before, entropy_after, params_factored, params_dense, compression,
        n_layers, accuracy, loss, n, baseline_accuracy, baseline_loss, accuracy_drop``. Rows
        already in ``out`` come first. ``records.info`` holds run statistics (evaluations,
        SVDs, seconds, evaluation mode).

    Examples
    --------
    >>> import torch, tnconv
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(),
    ...                           torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 3))
    >>> data = (torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,)))
    >>> rows = tnconv.sweep(net, data, cuts=["out|in,kh,kw"], levels=[1.0, 0.5], progress=False)
    >>> [(r["cut"], r["level"], r["rank"]) for r in rows]
    [('out|in,kh,kw', 1.0, 8), ('out|in,kh,kw', 0.5, 4)]
    """
    check_sweep_call(model, batch_size, callback)
    levels = check_sweep_args(mode, criterion, levels, cuts)
    if executor not in SWEEP_EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; valid: {', '.join(SWEEP_EXECUTORS)}")
    if executor == "ray":
        from .distributed import ray_sweep

        return ray_sweep(model, data, layers=layers, cuts=cuts, levels=levels,
                         criterion=criterion, mode=mode, out=out, include_linear=include_linear,
                         batch_size=batch_size, device=device, amp=amp, cache_bytes=cache_bytes,
                         use_prefix=use_prefix, reuse_svd=reuse_svd, progress=progress,
                         callback=callback, ray_address=ray_address)
    t0 = time.perf_counter()
    device = model_device(model) if device is None else resolve_device(device)
    if amp is None:
        amp = device.type == "cuda"
    if cache_bytes is None:
        cache_bytes = default_cache_bytes(device)
    work, index, chosen = working_copy(model, layers, include_linear, device)
    sink = RowSink(out, callback)  # locks out= (one writer at a time) and reads its rows
    runner = None
    try:
        # checks every cut first
        todo = sweep_todo(mode, chosen, cuts, levels, criterion, sink.done)
        runner = PrefixRunner(work, data, batch_size=batch_size, device=device, amp=amp,
                              cache_bytes=cache_bytes, use_prefix=use_prefix)
        baseline = runner.evaluate()
        info: dict[str, Any] = {"eval_mode": runner.mode, "stages": len(runner.stages),
                                "evaluations": 1, "svds": 0, "rows_new": 0}
        base = {"baseline_accuracy": baseline["accuracy"], "baseline_loss": baseline["loss"]}
        fingerprint = (sweep_fingerprint(model, data, cuts=cuts, levels=levels,
                                         criterion=criterion) if out is not None else {})
        check_resumable(sink.rows, out, baseline, mode, len(chosen), fingerprint=fingerprint,
                        stored=sink.meta)
        sink.open(len(todo), progress, f"sweep ({mode}, {runner.mode} evaluation)", info,
                  fingerprint)
        if mode == "single":
            run_single(todo, runner, criterion, reuse_svd, index, base, info, sink.emit)
        else:
            run_all(todo, chosen, runner, criterion, reuse_svd, base, info, sink.emit)
    finally:
        sink.close()
        if runner is not None:
            runner.release()
    info["seconds"] = time.perf_counter() - t0
    sink.rows.info = info  # type: ignore[attr-defined]
    return sink.rows


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
        self.log = (RowLog(out, SWEEP_FIELDS, string_fields=_STRING_FIELDS, key=row_key)
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
        factored = sum(r.params_factored for r in reports)
        dense = sum(r.params_dense for r in reports)
        emit({"mode": "all", "layer": ALL_LAYERS, "cut": cut, "criterion": criterion,
              "level": level, "rank": sum(ranks), "full_rank": sum(s.full_rank for s in layer_svds),
              "rel_error": rel_error, "norm_loss": norm_loss, "params_factored": factored,
              "params_dense": dense, "compression": dense / factored if factored else math.nan,
              "n_layers": len(modules), **_metrics_row(metrics, base)})
