"""Sweeps on a Ray cluster: the rows of :func:`tnconv.sweep`, computed by Ray workers.

``sweep(..., executor="ray")`` calls :func:`ray_sweep`. The work is cut into tasks:

* ``mode="single"``: one task per (layer, cut), which reuses one SVD for all its levels;
* ``mode="all"``: one task per (cut, level).

The model (a CPU copy) and the evaluation data are put in Ray's object store once
(``ray.put``). One :class:`SweepWorker` actor per slot of the cluster loads them once, verifies
the model's stage chain once and runs task after task, in model order, so its prefix cache of
activations moves forward as in a local sweep. A worker asks for one GPU when the cluster has
GPUs (and ``device`` is not ``"cpu"``), else for ``threads`` CPUs. The baseline evaluation runs
on a worker too, so the driver computes nothing heavy.

The driver holds the results file (its lock, the rows and the fingerprint ``<out>.meta.json``
of :mod:`tnconv.evaluation.fingerprint`, exactly as a local sweep) and appends each task's rows as
the task finishes, with one progress bar. Faults:

* a worker that dies in the middle of a task (killed, out of memory, a lost node): Ray restarts
  it and runs the task again (``max_retries``); its rows reach the file once, when it finishes;
* an interrupted driver: rerunning the same call reads the file and starts only the tasks that
  still have rows to compute (a task half written is started again for its missing levels);
* a task that keeps failing: :class:`SweepTaskError` names the task; every row finished before
  is in the file, and a rerun resumes.

Ray is imported only inside these functions: ``import tnconv`` never imports it.
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any

import torch
from torch import nn

from ..evaluation.fingerprint import check_resumable, sweep_fingerprint
from ..evaluation.prefix import PrefixRunner, default_cache_bytes
from ..model_layers import select_layers
from ..records import Records
from ..runtime import resolve_device
from .sweep_engine import (
    ALL_LAYERS,
    RowSink,
    check_sweep_args,
    check_sweep_call,
    row_key,
    run_all,
    run_single,
    sweep_options,
    sweep_todo,
    working_copy,
)

__all__ = ["ray_sweep", "import_ray", "connect", "task_resources", "SweepTaskError",
           "RAY_INSTALL"]

#: How to install the optional dependency.
RAY_INSTALL = 'pip install "tnconv[ray]"'
_NICENESS = "RAY_worker_niceness"


class SweepTaskError(RuntimeError):
    """A Ray task of a sweep failed for good; the message names the task."""


def import_ray() -> Any:
    """The ``ray`` module, or an ImportError saying how to install it.

    Examples
    --------
    >>> try:
    ...     ray = import_ray()
    ... except ImportError as exc:
    ...     assert "tnconv[ray]" in str(exc)
    """
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"executor='ray' needs Ray, which is not installed here: "
                          f"{RAY_INSTALL} (or pip install ray)") from exc
    return ray


def connect(address: str | None = None) -> tuple[Any, bool]:
    """Join a Ray cluster: ``address``, else ``RAY_ADDRESS``, else a new local instance
    (its workers at niceness 0 unless ``RAY_worker_niceness`` says otherwise).

    Returns ``(ray, started)``; ``started`` is False when Ray was already initialized in this
    process (that instance is used as it is), and the caller shuts down only what it started.
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is not None:
        ray.init(address=address)
        return ray, True
    # a local instance does this process's work: its workers at our priority, not Ray's
    # default of nice 15 (which starves them on a busy machine); RAY_worker_niceness overrides
    saved = os.environ.get(_NICENESS)
    os.environ.setdefault(_NICENESS, "0")
    try:
        ray.init()
    finally:
        if saved is None:
            os.environ.pop(_NICENESS, None)
    return ray, True


def task_resources(ray: Any, device: str | torch.device | None, threads: int
                   ) -> tuple[dict[str, Any], str]:
    """Ray resources of one task and the device it evaluates on.

    One GPU per task when the cluster has GPUs and ``device`` is None or a CUDA device;
    otherwise ``threads`` CPUs and the CPU.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    kind = None if device is None else torch.device(device).type
    if kind not in (None, "cpu", "cuda"):
        raise ValueError(f"device {device!r} cannot be used on Ray workers; valid: None, "
                         "'cpu', 'cuda'")
    has_gpu = ray.cluster_resources().get("GPU", 0) > 0
    if kind == "cuda" and not has_gpu:
        raise ValueError("device='cuda' but the Ray cluster has no GPU; pass device=None or "
                         "'cpu'")
    if kind != "cpu" and has_gpu:
        return {"num_cpus": 1, "num_gpus": 1}, "cuda"
    return {"num_cpus": threads, "num_gpus": 0}, "cpu"


def _runner(model: nn.Module, data: Any, opts: dict[str, Any]
            ) -> tuple[PrefixRunner, dict[str, int], list[tuple[str, nn.Module]]]:
    """In a worker: the working copy of the model, its layer index, chosen layers, runner."""
    torch.set_num_threads(opts["threads"])
    device = resolve_device(opts["device"])
    work, index, chosen = working_copy(model, opts["layers"], opts["include_linear"], device)
    amp = device.type == "cuda" if opts["amp"] is None else opts["amp"]
    cache = default_cache_bytes(device) if opts["cache_bytes"] is None else opts["cache_bytes"]
    runner = PrefixRunner(work, data, batch_size=opts["batch_size"], device=device, amp=amp,
                          cache_bytes=cache, use_prefix=opts["use_prefix"])
    return runner, index, chosen


class SweepWorker:
    """A Ray actor: the model, the data and one :class:`PrefixRunner`, held for many tasks.

    Tasks come in model order, so the prefix cache moves forward from task to task as in a
    local sweep instead of being rebuilt, and the chain is verified once per worker.
    """

    def __init__(self, model: nn.Module, data: Any, opts: dict[str, Any]) -> None:
        self.opts = opts
        self.runner, self.index, self.chosen = _runner(model, data, opts)

    def baseline(self) -> dict[str, Any]:
        """The untouched model's accuracy and loss, and the runner's mode."""
        runner = self.runner
        return {**runner.evaluate(), "eval_mode": runner.mode, "stages": len(runner.stages)}

    def run(self, keys: list[tuple[str, str, Any]], base: dict[str, float]
            ) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """The rows ``(layer, cut, level)`` of one (layer, cut) or one (cut, level)."""
        opts, info = self.opts, {"evaluations": 0, "svds": 0, "rows_new": 0}
        rows: list[dict[str, Any]] = []
        if opts["mode"] == "single":
            modules = dict(self.chosen)
            todo = [(n, modules[n], c, lv) for n, c, lv in keys]
            run_single(todo, self.runner, opts["criterion"], opts["reuse_svd"], self.index, base,
                       info, rows.append)
        else:
            todo = [(ALL_LAYERS, None, c, lv) for _, c, lv in keys]
            run_all(todo, self.chosen, self.runner, opts["criterion"], opts["reuse_svd"], base,
                    info, rows.append)
        return rows, info


def _tasks(todo: list[tuple[str, Any, str, Any]], mode: str
           ) -> dict[str, list[tuple[str, str, Any]]]:
    """Rows to compute grouped into tasks, by a label naming each task (in ``todo`` order)."""
    tasks: dict[str, list[tuple[str, str, Any]]] = {}
    for name, _, cut, level in todo:
        label = (f"layer {name!r}, cut {cut!r}" if mode == "single"
                 else f"all layers, cut {cut!r}, level {level!r}")
        tasks.setdefault(label, []).append((name, cut, level))
    return tasks


def ray_sweep(
    model: nn.Module,
    data: Any,
    *,
    ray_address: str | None = None,
    max_retries: int = 3,
    threads: int = 1,
    **options: Any,
) -> Records:
    """:func:`tnconv.sweep` on a Ray cluster: the same rows, the same resumable ``out`` file.

    The arguments are those of :func:`tnconv.sweep`, plus

    ray_address
        The cluster (default ``RAY_ADDRESS``, else a local ``ray.init()``, shut down at the
        end). A Ray instance already initialized in this process is used as it is.
    max_retries
        How often Ray reruns a task whose worker died.
    threads
        CPUs (torch threads) per task on a cluster without GPUs.

    ``device`` is where the workers evaluate: default a GPU when the cluster has GPUs, else
    the CPU. ``records.info`` adds ``tasks``, ``workers`` and ``executor``.

    Raises
    ------
    SweepTaskError
        A task failed for good (an error in the task, or its worker died ``max_retries + 1``
        times); it names the task, and every row finished before is in ``out``.

    Examples
    --------
    >>> import torch, tnconv  # doctest: +SKIP
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.Flatten(),
    ...                           torch.nn.Linear(8 * 6 * 6, 3))  # doctest: +SKIP
    >>> data = (torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,)))  # doctest: +SKIP
    >>> rows = tnconv.sweep(net, data, levels=[1.0, 0.5], executor="ray")  # doctest: +SKIP
    """
    o = sweep_options(options)
    layers, cuts, criterion, mode, out = (o[k] for k in ("layers", "cuts", "criterion", "mode",
                                                         "out"))
    include_linear, batch_size, device, amp, callback = (
        o[k] for k in ("include_linear", "batch_size", "device", "amp", "callback"))
    cache_bytes, use_prefix, reuse_svd, progress = (
        o[k] for k in ("cache_bytes", "use_prefix", "reuse_svd", "progress"))
    check_sweep_call(model, batch_size, callback)
    levels = check_sweep_args(mode, criterion, o["levels"], cuts)
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
    t0 = time.perf_counter()
    chosen = select_layers(model, layers, include_linear=include_linear)
    sink = RowSink(out, callback)  # locks out= and reads the rows already there
    ray, started, workers, refs = None, False, [], ()
    try:
        todo = sweep_todo(mode, chosen, cuts, levels, criterion, sink.done)
        tasks = _tasks(todo, mode)
        ray, started = connect(ray_address)
        resources, worker_device = task_resources(ray, device, threads)
        opts = {"layers": [n for n, _ in chosen], "include_linear": include_linear,
                "device": worker_device, "amp": amp, "cache_bytes": cache_bytes,
                "batch_size": batch_size, "use_prefix": use_prefix, "threads": threads,
                "mode": mode, "criterion": criterion, "reuse_svd": reuse_svd}
        refs = (ray.put(copy.deepcopy(model).cpu()), ray.put(data))  # once, not per task
        workers = _start_workers(ray, refs, opts, resources, len(tasks), max_retries)
        baseline = _get(ray, workers[0].baseline.remote(), "baseline evaluation", max_retries,
                        out)
        base = {"baseline_accuracy": baseline["accuracy"], "baseline_loss": baseline["loss"]}
        fingerprint = (sweep_fingerprint(model, data, cuts=cuts, levels=levels,
                                         criterion=criterion) if out is not None else {})
        check_resumable(sink.rows, out, baseline, mode, len(chosen), fingerprint=fingerprint,
                        stored=sink.meta)
        info: dict[str, Any] = {"eval_mode": baseline["eval_mode"], "stages": baseline["stages"],
                                "evaluations": 1, "svds": 0, "rows_new": 0, "tasks": len(tasks),
                                "workers": len(workers), "executor": "ray",
                                "seconds_setup": time.perf_counter() - t0}
        sink.open(len(todo), progress, f"sweep ({mode}, {baseline['eval_mode']} evaluation, "
                  f"{len(tasks)} tasks on {len(workers)} Ray workers)", info, fingerprint)
        _collect(ray, workers, tasks, base, sink, info, max_retries, out)
    finally:
        for worker in workers:
            ray.kill(worker, no_restart=True)
        sink.close()
        if started:
            ray.shutdown()
    order = {(mode, str(n), c, criterion, float(lv)): i for i, (n, _, c, lv) in enumerate(todo)}
    new = sorted(sink.rows[len(sink.rows) - info["rows_new"]:], key=lambda r: order[row_key(r)])
    rows = Records(sink.rows[: len(sink.rows) - info["rows_new"]] + new)
    info["seconds"] = time.perf_counter() - t0
    rows.info = info  # type: ignore[attr-defined]
    return rows


def _get(ray: Any, ref: Any, label: str, max_retries: int, out: Any) -> Any:
    """``ray.get(ref)``, a failure turned into a :class:`SweepTaskError` naming the task."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:
        kept = f"; the rows finished are in {out}, and a rerun resumes" if out is not None else ""
        raise SweepTaskError(
            f"sweep task ({label}) failed: {type(exc).__name__} (a worker that died was retried "
            f"up to {max_retries} times){kept}. Cause: {str(exc).strip()[-2000:]}") from exc


def _start_workers(ray: Any, refs: tuple[Any, Any], opts: dict[str, Any],
                   resources: dict[str, Any], n_tasks: int, max_retries: int) -> list[Any]:
    """One :class:`SweepWorker` per slot of the cluster (at most one per task) on the model and
    data in ``refs`` (the caller keeps them alive, for restarts); a worker that dies is
    restarted and its task rerun, ``max_retries`` times.
    """
    total = ray.cluster_resources()
    slots = (total.get("GPU", 0) if resources["num_gpus"] else
             total.get("CPU", 1) // resources["num_cpus"])
    actor = ray.remote(SweepWorker).options(max_restarts=max_retries,
                                             max_task_retries=max_retries, **resources)
    return [actor.remote(*refs, opts) for _ in range(max(1, min(int(slots), n_tasks)))]


def _collect(ray: Any, workers: list[Any], tasks: dict[str, list[tuple[str, str, Any]]],
             base: dict[str, float], sink: RowSink, info: dict[str, Any], max_retries: int,
             out: Any) -> None:
    """Hand the tasks, in order, to the workers as they become free, and write each task's
    rows as it finishes."""
    queue = list(tasks.items())[::-1]  # pop() takes the first
    running: dict[Any, tuple[str, Any]] = {}
    free = list(workers)
    while queue or running:
        while queue and free:
            label, keys = queue.pop()
            worker = free.pop(0)
            running[worker.run.remote(keys, base)] = (label, worker)
        ready, _ = ray.wait(list(running), num_returns=1)
        for ref in ready:
            label, worker = running.pop(ref)
            rows, task_info = _get(ray, ref, label, max_retries, out)
            free.append(worker)
            for row in rows:
                sink.emit(row)
            info["evaluations"] += task_info["evaluations"]
            info["svds"] += task_info["svds"]
