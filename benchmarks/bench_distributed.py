"""Benchmark: the same sweep locally (one thread) and on a local Ray instance (2 workers).

* **local** -- :func:`tnconv.sweep` in this process with ``torch.set_num_threads(1)``;
* **ray** -- ``tnconv.sweep(..., executor="ray")`` on ``ray.init(num_cpus=2)``: one task per
  (layer, cut), one thread per task, so two tasks run at once.

Both sides sweep cnn4 (the cached trained checkpoint when there is one, else a fixed random
init) on a Fashion-MNIST test subset, on the CPU. The rows are compared field by field
(identical, accuracies and losses bit for bit). The Ray instance is started, and its two
workers warmed up (torch imported) by a one-row sweep, before the timed run; ``ray.init`` is
timed apart. Ray's workers run at niceness 0 here (``RAY_worker_niceness=0``, as in the local
instance that ``executor="ray"`` starts): the local side's priority (Ray's default is 15).
The script prints a table and writes JSON to ``benchmarks/results/`` with the
machine's load average before and after (``os.getloadavg()``: other work on a shared 2-core
machine slows the two-worker side most).

    python benchmarks/bench_distributed.py                 # 1000 images, 7 cuts x 6 levels
    python benchmarks/bench_distributed.py --images 300    # quicker
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from _common import checkpoint_or_init, command_line, environment, load_average, write_result

import tnconv
from tnconv.data import load_dataset

# -- configuration -----------------------------------------------------------------------------
IMAGES = 1000  # Fashion-MNIST test images (a fixed subset)
LEVELS = (1.0, 0.75, 0.5, 0.25, 0.1, 0.05)  # kept fractions
CUTS = "all"  # the 7 cuts of each of cnn4's 4 conv layers: 28 Ray tasks
WORKERS = 2  # Ray CPUs, one thread per task
BATCH = 500  # evaluation batch size
GOAL = 1.5  # speed-up asked of 2 workers on this 2-core machine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=IMAGES)
    args = parser.parse_args(argv)
    import ray

    from tnconv.study.sweep_engine import row_key

    env = environment(packages=("ray",))
    load_before = env["load_average"]
    model, source = checkpoint_or_init("cnn4", "fashion-mnist", lambda: tnconv.cnn4(10, 1))
    data = load_dataset("fashion-mnist", "test").subset(args.images, seed=0)
    kw = {"cuts": CUTS, "levels": LEVELS, "batch_size": BATCH, "progress": False}

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    local = tnconv.sweep(model, data, **kw)
    t_local = time.perf_counter() - t0

    os.environ.setdefault("RAY_worker_niceness", "0")  # as tnconv's own local ray.init()
    t0 = time.perf_counter()
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
    t_init = time.perf_counter() - t0
    try:
        tnconv.sweep(model, data, **{**kw, "cuts": ["out|in,kh,kw", "out,kh|in,kw"],
                                     "levels": [0.5]}, layers=["block1.conv"], executor="ray")
        t0 = time.perf_counter()
        remote = tnconv.sweep(model, data, **kw, executor="ray")
        t_ray = time.perf_counter() - t0
    finally:
        ray.shutdown()

    want, got = {row_key(r): r for r in local}, {row_key(r): r for r in remote}
    identical = len(local) == len(remote) == len(want) and want == got
    ratio = t_local / t_ray
    busy = load_before[0] > 1.0
    print(f"cnn4 ({source}), {args.images} Fashion-MNIST images, {len(local)} rows "
          f"({remote.info['tasks']} Ray tasks), CPU, torch {torch.__version__}, ray "
          f"{ray.__version__}")
    print(f"{'side':<28}{'seconds':>10}")
    print(f"{'local, 1 thread':<28}{t_local:>10.2f}")
    print(f"{f'ray, {WORKERS} one-thread workers':<28}{t_ray:>10.2f}")
    print(f"{'  of which workers + baseline':<28}{remote.info['seconds_setup']:>10.2f}")
    print(f"{'(ray.init, not counted)':<28}{t_init:>10.2f}")
    load_after = load_average()
    print(f"speed-up {ratio:.2f}x (goal {GOAL}x), rows identical: {identical}, load average "
          f"before {load_before[0]:.2f}{' (busy machine)' if busy else ''}, after "
          f"{load_after[0]:.2f}")
    record = {
        "benchmark": "bench_distributed", "command": command_line(__file__, argv),
        "model": "cnn4", "model_source": source, "dataset": "fashion-mnist",
        "images": args.images, "cuts": CUTS, "levels": list(LEVELS), "rows": len(local),
        "tasks": remote.info["tasks"],
        "local_threads": 1, "ray_workers": WORKERS, "threads_per_task": 1,
        "seconds_local": t_local, "seconds_ray": t_ray, "seconds_ray_init": t_init,
        "speedup": ratio, "goal": GOAL, "rows_identical": identical,
        # busy: a 1-minute load average above 1 before the run (the two workers need both
        # cores of the 2-core machine); the environment block's "busy" is load > cores
        "busy_machine": busy, "ray_worker_niceness": os.environ["RAY_worker_niceness"],
        "seconds_ray_setup": remote.info["seconds_setup"],
    }
    print(f"wrote {write_result('bench_distributed_cpu', record, env=env)}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
