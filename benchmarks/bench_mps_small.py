"""Truncating chains on small kernels: ``tnconv.to_mps`` against tensorly's ``tensor_train``.

The millisecond kernels of cnn4 and resnet20 (single-channel first layers, 16x16x3x3, the 1x1
shortcuts) are where fixed per-call costs decide. For each shape (a Gaussian kernel) and bond
dimension (4, 8, 16, 32), ``REPS`` rounds each time one tnconv call (``to_mps(w,
"out|kh|kw|in", max_bond=b)``, ``to_kernel``, ``num_params``, ``bond_dims``: what
``bench_decomp.py`` times) and then one tensorly call (``tensor_train`` on the kernel in chain
order, ``tt_to_tensor``), after 20 warm-up rounds, 1 thread. The JSON keeps the median and the
best of each side, and their ratios. Run::

    python benchmarks/bench_mps_small.py            # about 30 s
    python benchmarks/bench_mps_small.py --reps 50  # quicker

Writes ``benchmarks/results/bench_mps_small_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tnconv  # noqa: E402

SHAPES = [(32, 1, 3, 3), (16, 1, 3, 3), (16, 16, 3, 3), (32, 16, 1, 1), (64, 32, 1, 1),
          (32, 32, 3, 3), (64, 64, 3, 3)]
BONDS = (4, 8, 16, 32)
OUT = Path(__file__).resolve().parent / "results" / "bench_mps_small_cpu.json"


def _tnconv(w: torch.Tensor, b: int) -> tuple:
    m = tnconv.to_mps(w, "out|kh|kw|in", max_bond=b)
    return m.to_kernel(), m.num_params, list(m.bond_dims)


def _tensorly(x: torch.Tensor, b: int) -> tuple:
    import tensorly as tl
    from tensorly.decomposition import tensor_train

    tt = tensor_train(x, rank=[1] + [b] * (x.dim() - 1) + [1])
    return tl.tt_to_tensor(tt), sum(int(f.numel()) for f in tt.factors), list(tt.rank[1:-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args(argv)
    import tensorly as tl

    torch.set_num_threads(1)
    load0, rows, gen = os.getloadavg(), [], torch.Generator().manual_seed(0)
    with tl.backend_context("pytorch"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for shape in SHAPES:
            w = torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
            x = w.permute(0, 2, 3, 1).contiguous()
            for b in BONDS:
                for _ in range(20):
                    _tnconv(w, b), _tensorly(x, b)
                ours, theirs = [], []
                for _ in range(args.reps):
                    t0 = time.perf_counter()
                    _tnconv(w, b)
                    t1 = time.perf_counter()
                    _tensorly(x, b)
                    ours.append(t1 - t0)
                    theirs.append(time.perf_counter() - t1)
                row = {"shape": list(shape), "max_bond": b,
                       "tnconv_median_s": statistics.median(ours),
                       "tensorly_median_s": statistics.median(theirs),
                       "ratio_median": statistics.median(ours) / statistics.median(theirs),
                       "ratio_best": min(ours) / min(theirs)}
                rows.append(row)
                print(f"{str(shape):16} b={b:<3} median {row['ratio_median']:.2f} "
                      f"best {row['ratio_best']:.2f}", flush=True)
    out = {"benchmark": "bench_mps_small: to_mps vs tensor_train on small kernels",
           "command": "python benchmarks/bench_mps_small.py " + " ".join(sys.argv[1:]),
           "reps": args.reps, "threads": 1, "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d %H:%M:%S"),
           "load_average": [list(load0), list(os.getloadavg())], "rows": rows,
           "max_ratio_median": max(r["ratio_median"] for r in rows),
           "max_ratio_best": max(r["ratio_best"] for r in rows)}
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"max median ratio {out['max_ratio_median']:.2f}, max best-of ratio "
          f"{out['max_ratio_best']:.2f}; wrote {OUT}")
    return out


if __name__ == "__main__":
    main()
