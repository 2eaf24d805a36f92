"""Benchmark: the fast truncation sweep against the naive loop, on ResNet-50.

Both sides produce the same rows in the same run:

* **fast** -- :func:`tnconv.sweep` as shipped: one SVD per (layer, cut) reused for every level
  and for equivalent cuts, no evaluation for untruncated rows, and evaluation of only the
  blocks after the truncated layer from cached activations;
* **naive** -- ``use_prefix=False, reuse_svd=False``: a fresh SVD and a full-model evaluation
  for every row.

The rows are compared field by field (accuracy exactly, loss to 1e-6) and the script prints a
table and writes JSON (device, torch version, threads, both timings, speedup, command) to
``benchmarks/results/``.

    python benchmarks/bench_sweep.py                       # CPU: 16 images, 4 layers, 3 levels
    python benchmarks/bench_sweep.py --device cuda --full  # 53 layers x 7 cuts x 6 levels, 10k
"""

from __future__ import annotations

import argparse
import sys

import torch
from _common import checkpoint_or_init, command_line, environment, interleaved, sync, write_result

import tnconv
from tnconv.data import load_dataset

# -- configuration -----------------------------------------------------------------------------
CPU_LAYERS = ["layer3.5.conv2", "layer4.0.conv1", "layer4.2.conv2", "layer4.2.conv3"]
CPU_LEVELS = (1.0, 0.5, 0.1)  # kept fractions
CPU_IMAGES = 16  # test images on CPU (one ResNet-50 forward of 64 images takes ~15 s here)
CPU_THREADS = 1  # on the shared 2-core machine one thread was 25x faster for SVDs than two
FULL_LEVELS = (1.0, 0.75, 0.5, 0.25, 0.1, 0.05)
FULL_IMAGES = 10_000


def _resnet50(dataset: str) -> torch.nn.Module:
    """A randomly initialised ResNet-50 for ``dataset`` (no cached checkpoint)."""
    test = load_dataset(dataset, "test")
    return tnconv.resnet50(test.num_classes, test.in_channels)


def _same(fast: list[dict], naive: list[dict]) -> tuple[bool, float]:
    if len(fast) != len(naive):
        return False, float("inf")
    worst = 0.0
    for a, b in zip(fast, naive):
        for k in a:
            if k == "loss" or k == "accuracy_drop":
                continue
            if a[k] != b[k]:
                return False, float("inf")
        worst = max(worst, abs(a["loss"] - b["loss"]) / max(abs(b["loss"]), 1e-12))
    return worst <= 1e-6, worst


def main(argv: list[str] | None = None) -> int:
    """Run both sweeps, compare their rows, print a table and write the JSON record."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--full", action="store_true",
                   help="all 53 conv layers x 7 cuts x 6 levels on 10k test images")
    p.add_argument("--images", type=int, help="test images (default 16 on CPU, 10000 with --full)")
    p.add_argument("--dataset", default="fashion-mnist", help="dataset (default fashion-mnist)")
    p.add_argument("--batch-size", type=int, default=1000, help="evaluation batch size")
    p.add_argument("--no-naive", action="store_true", help="time the fast sweep only")
    p.add_argument("--threads", type=int,
                   help=f"torch CPU threads (default {CPU_THREADS} on CPU, torch's on CUDA)")
    p.add_argument("--out", help="JSON file (default benchmarks/results/bench_sweep_<dev>.json)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda asked for, but CUDA is not available")
    threads = args.threads or (CPU_THREADS if device.type == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    layers = None if args.full else CPU_LAYERS
    levels = FULL_LEVELS if args.full else CPU_LEVELS
    n = args.images or (FULL_IMAGES if args.full else CPU_IMAGES)
    env = environment(device)
    model, weights = checkpoint_or_init("resnet50", args.dataset,
                                        lambda: _resnet50(args.dataset), device)
    data = load_dataset(args.dataset, "test").subset(n, seed=0).to(device)
    kw = dict(layers=layers, cuts="all", levels=levels, batch_size=args.batch_size,
              device=device, progress=True)

    sides = ["fast"] if args.no_naive else ["fast", "naive"]
    options = {"fast": {}, "naive": {"use_prefix": False, "reuse_svd": False}}

    def side_call(side: str):
        def call():
            rows = tnconv.sweep(model, data, **kw, **options[side])
            sync(device)
            return rows
        return call

    sync(device)
    timed = interleaved({side: side_call(side) for side in sides}, 1)  # one sweep per side
    timings = {side: t.best for side, t in timed.items()}
    results = {side: t.result for side, t in timed.items()}
    fast = results["fast"]
    equal, worst = _same(fast, results["naive"]) if "naive" in results else (None, None)
    speedup = timings["naive"] / timings["fast"] if "naive" in timings else None

    name = env["device_name"]
    record = {
        "benchmark": "bench_sweep", "weights": weights,
        "dataset": args.dataset, "images": n,
        "layers": layers or "all conv layers", "n_layers": len({r["layer"] for r in fast}),
        "cuts": 7, "levels": list(levels), "rows": len(fast),
        "fast_seconds": timings["fast"], "naive_seconds": timings.get("naive"),
        "speedup": speedup, "rows_equal": equal, "max_rel_loss_diff": worst,
        "fast_info": fast.info, "naive_info": results["naive"].info if "naive" in results else None,
        "command": command_line(__file__, argv),
    }
    print()
    print(f"{'side':<8}{'rows':>6}{'evaluations':>13}{'SVDs':>6}{'seconds':>10}")
    for side in sides:
        info = results[side].info
        print(f"{side:<8}{len(results[side]):>6}{info['evaluations']:>13}{info['svds']:>6}"
              f"{timings[side]:>10.1f}")
    if speedup is not None:
        print(f"speedup {speedup:.1f}x, rows equal: {equal} (max relative loss difference "
              f"{worst:.1e}); {name}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    out = write_result(f"bench_sweep_{device.type}{'_full' if args.full else ''}", record,
                       args.out, env=env)
    print(f"wrote {out}")
    return 0 if equal in (True, None) else 1


if __name__ == "__main__":
    sys.exit(main())
