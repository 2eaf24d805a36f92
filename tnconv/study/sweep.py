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
  enclosing block (:class:`tnconv.evaluation.prefix.PrefixRunner`); the accuracy is exactly that of
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
the data, the cuts, levels and criterion; :mod:`tnconv.evaluation.fingerprint`) is kept in
``<out>.meta.json`` and a mismatch is refused, saying what differs. One sweep writes a file at
a time (a lock file, ``<out>.lock``); duplicate rows found on resuming are dropped with a
warning.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..evaluation.fingerprint import check_resumable, sweep_fingerprint
from ..evaluation.prefix import PrefixRunner, default_cache_bytes
from ..model_layers import LayerSpec
from ..records import Records
from ..runtime import model_device, resolve_device
from .distributed import ray_sweep
from .sweep_engine import (
    DEFAULT_LEVELS,
    LEVEL_CRITERIA,
    SWEEP_EXECUTORS,
    SWEEP_FIELDS,
    SWEEP_MODES,
    RowSink,
    check_sweep_args,
    check_sweep_call,
    run_all,
    run_single,
    sweep_todo,
    working_copy,
)

__all__ = ["sweep", "SWEEP_FIELDS", "DEFAULT_LEVELS", "SWEEP_MODES", "LEVEL_CRITERIA",
           "SWEEP_EXECUTORS"]


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
        norm_loss, entropy_before, entropy_after, params_after, params_before, compression_ratio,
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


