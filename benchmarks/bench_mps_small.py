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
import math
import warnings

import torch
from _common import command_line, environment, interleaved, write_result

import tnconv

SHAPES = [(32, 1, 3, 3), (16, 1, 3, 3), (16, 16, 3, 3), (32, 16, 1, 1), (64, 32, 1, 1),
          (32, 32, 3, 3), (64, 64, 3, 3)]
BONDS = (4, 8, 16, 32)
NAME = "bench_mps_small_cpu"  # results/<NAME>.json
WARMUP = 20  # untimed rounds per shape and bond


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
    ap.add_argument("--out", default=None, help=f"JSON path (default results/{NAME}.json)")
    args = ap.parse_args(argv)
    import tensorly as tl

    torch.set_num_threads(1)
    env = environment(packages=("tensorly",))
    rows, gen = [], torch.Generator().manual_seed(0)
    with tl.backend_context("pytorch"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for shape in SHAPES:
            w = torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
            x = w.permute(0, 2, 3, 1).contiguous()
            for b in BONDS:
                timed = interleaved({"tnconv": lambda w=w, b=b: _tnconv(w, b),
                                     "tensorly": lambda x=x, b=b: _tensorly(x, b)},
                                    args.reps, warmup=WARMUP)
                ours, theirs = timed["tnconv"], timed["tensorly"]
                row = {"shape": list(shape), "max_bond": b,
                       "tnconv_median_s": ours.median,
                       "tensorly_median_s": theirs.median,
                       "ratio_median": ours.median / theirs.median,
                       "ratio_best": ours.best / theirs.best}
                rows.append(row)
                print(f"{str(shape):16} b={b:<3} median {row['ratio_median']:.2f} "
                      f"best {row['ratio_best']:.2f}", flush=True)
    out = {"benchmark": "bench_mps_small: to_mps vs tensor_train on small kernels",
           "command": command_line(__file__, argv),
           "reps": args.reps, "rows": rows,
           "max_ratio_median": max(r["ratio_median"] for r in rows),
           "max_ratio_best": max(r["ratio_best"] for r in rows)}
    path = write_result(NAME, out, args.out, env=env)
    print(f"max median ratio {out['max_ratio_median']:.2f}, max best-of ratio "
          f"{out['max_ratio_best']:.2f}; wrote {path}")
    return out


if __name__ == "__main__":
    main()
