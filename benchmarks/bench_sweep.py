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
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

import tnconv
from tnconv.data import load_dataset

# -- configuration -----------------------------------------------------------------------------
CPU_LAYERS = ["layer3.5.conv2", "layer4.0.conv1", "layer4.2.conv2", "layer4.2.conv3"]
CPU_LEVELS = (1.0, 0.5, 0.1)  # kept fractions
CPU_IMAGES = 16  # test images on CPU (one ResNet-50 forward of 64 images takes ~15 s here)
CPU_THREADS = 1  # on the shared 2-core machine one thread was 25x faster for SVDs than two
FULL_LEVELS = (1.0, 0.75, 0.5, 0.25, 0.1, 0.05)
FULL_IMAGES = 10_000
RESULTS = Path(__file__).resolve().parent / "results"


def _model(dataset: str, device: torch.device) -> tuple[torch.nn.Module, str]:
    from tnconv.checkpoints import default_checkpoint_path, load_checkpoint

    path = default_checkpoint_path("resnet50", dataset)
    if path.is_file():
        model, _ = load_checkpoint(path, map_location=device)
        return model.eval(), f"checkpoint {path}"
    torch.manual_seed(0)
    test = load_dataset(dataset, "test")
    model = tnconv.resnet50(test.num_classes, test.in_channels)
    return model.to(device).eval(), "random init (no cached checkpoint)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    model, weights = _model(args.dataset, device)
    data = load_dataset(args.dataset, "test").subset(n, seed=0).to(device)
    kw = dict(layers=layers, cuts="all", levels=levels, batch_size=args.batch_size,
              device=device, progress=True)

    timings = {}
    results = {}
    sides = ["fast"] if args.no_naive else ["fast", "naive"]
    for side in sides:
        opts = {} if side == "fast" else {"use_prefix": False, "reuse_svd": False}
        _sync(device)
        t = time.perf_counter()
        rows = tnconv.sweep(model, data, **kw, **opts)
        _sync(device)
        timings[side] = time.perf_counter() - t
        results[side] = rows
    fast = results["fast"]
    equal, worst = _same(fast, results["naive"]) if "naive" in results else (None, None)
    speedup = timings["naive"] / timings["fast"] if "naive" in timings else None

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        platform.processor() or platform.machine())
    record = {
        "benchmark": "bench_sweep", "device": str(device), "device_name": name,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "weights": weights,
        "dataset": args.dataset, "images": n,
        "layers": layers or "all conv layers", "n_layers": len({r["layer"] for r in fast}),
        "cuts": 7, "levels": list(levels), "rows": len(fast),
        "fast_seconds": timings["fast"], "naive_seconds": timings.get("naive"),
        "speedup": speedup, "rows_equal": equal, "max_rel_loss_diff": worst,
        "fast_info": fast.info, "naive_info": results["naive"].info if "naive" in results else None,
        "command": "python " + " ".join(
            shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
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
    out = Path(args.out) if args.out else RESULTS / (
        f"bench_sweep_{device.type}{'_full' if args.full else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return 0 if equal in (True, None) else 1


if __name__ == "__main__":
    sys.exit(main())
