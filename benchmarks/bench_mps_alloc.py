"""MPS max_error allocation vs TT-SVD baselines, and to_mps speed vs tensorly.tensor_train.

For every conv kernel of the trained cnn4 / resnet20 (default chain "out|kh|kw|in", no split)
and every max_error, compares the parameters of ``tnconv.to_mps(max_error=...)`` with a plain
numpy TT-SVD (left to right) that splits the error evenly over the bonds, with the TT-SVD at
the smallest uniform rank meeting the same error, and with a lower bound for any chain along
the same path (the per-cut minimal ranks: each cut's Eckart-Young error alone must be within
max_error). Means per model and over all kernels. Then ``tnconv.best_chain`` at 10 % error
on every kernel (the best leg order's parameters against the default chain's). Then times to_mps
against tensorly's tensor_train on a random 512x512x3x3 kernel at max_bond 64 (best of 3, same run).

Run: ``python benchmarks/bench_mps_alloc.py`` (writes benchmarks/results/bench_mps_alloc.json).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from _common import command_line, environment, interleaved, trained_kernels, write_result

import tnconv

# -- config -----------------------------------------------------------------------------------
MODELS = ("cnn4", "resnet20")
DATASET = "fashion-mnist"
ERRORS = (0.05, 0.1, 0.2)
TIMING_SHAPE = (512, 512, 3, 3)
TIMING_BOND = 64
REPEATS = 3
THREADS = 1  # torch / numpy threads: the machine is shared (set None for all cores)
NAME = "bench_mps_alloc"  # results/<NAME>.json


def chain_array(w: torch.Tensor) -> np.ndarray:
    return w.double().numpy().transpose(0, 2, 3, 1)  # out|kh|kw|in


def tt_svd(a: np.ndarray, rank_of) -> tuple[float, list[int]]:
    """Plain TT-SVD left to right; ``rank_of(k, s, norm)`` picks each rank."""
    norm, rest, r_prev, kept, err2 = np.linalg.norm(a), a, 1, [], 0.0
    for k, d in enumerate(a.shape[:-1]):
        u, s, vh = np.linalg.svd(rest.reshape(r_prev * d, -1), full_matrices=False)
        r = max(1, min(rank_of(k, s, norm), len(s)))
        err2 += float((s[r:] ** 2).sum())
        rest, r_prev = s[:r, None] * vh[:r], r
        kept.append(r)
    return math.sqrt(err2) / norm, kept


def params(dims, ranks) -> int:
    full = [1, *ranks, 1]
    return sum(full[k] * d * full[k + 1] for k, d in enumerate(dims))


def even_split(a: np.ndarray, eps: float) -> tuple[float, list[int]]:
    per = eps / math.sqrt(a.ndim - 1)

    def rank_of(k, s, norm):
        tails = np.sqrt(np.cumsum((s**2)[::-1])[::-1])
        ok = np.nonzero(tails <= per * norm)[0]
        return int(ok[0]) if ok.size else len(s)

    return tt_svd(a, rank_of)


def uniform(a: np.ndarray, eps: float) -> tuple[float, list[int]]:
    lo, hi = 1, max(a.shape[0] * a.shape[1], a.shape[-1])
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if tt_svd(a, lambda k, s, n, m=mid: m)[0] <= eps else (mid + 1, hi)
    while lo > 1 and tt_svd(a, lambda k, s, n, m=lo - 1: m)[0] <= eps:
        lo -= 1
    return tt_svd(a, lambda k, s, n: lo)


def lower_bound(a: np.ndarray, eps: float) -> int:
    """Parameters of the per-cut minimal ranks: any chain within ``eps`` has bond ``k`` at
    least the smallest rank whose cut-``k`` Eckart-Young error is within ``eps``, and the
    parameter count grows with every rank, so no chain along this path can have fewer."""
    norm2, ranks = float((a**2).sum()), []
    for k in range(a.ndim - 1):
        s = np.linalg.svd(a.reshape(math.prod(a.shape[: k + 1]), -1), compute_uv=False)
        tails = np.append(np.cumsum((s**2)[::-1])[::-1], 0.0)
        ranks.append(max(1, int(np.nonzero(tails <= eps**2 * norm2)[0][0])))
    return params(a.shape, ranks)


def model_kernels() -> dict[str, torch.Tensor]:
    """Every kernel with ``kh * kw > 1`` of MODELS (from the checkpoint cache, trained now
    where it is missing), as ``{"<model>.<layer>": weight}``."""
    return dict(trained_kernels(MODELS, DATASET, sep="."))


def _summary(rows: list[dict]) -> dict:
    ratio = {key: np.array([r["params"] / r[key] for r in rows])
             for key in ("params_even_split", "params_uniform", "params_lower_bound")}
    return {"kernels": len(rows),
            "mean_ratio_vs_even_split": float(ratio["params_even_split"].mean()),
            "worst_ratio_vs_even_split": float(ratio["params_even_split"].max()),
            "mean_ratio_vs_uniform": float(ratio["params_uniform"].mean()),
            "worst_ratio_vs_uniform": float(ratio["params_uniform"].max()),
            "mean_lower_bound_vs_even_split": float(np.mean(
                [r["params_lower_bound"] / r["params_even_split"] for r in rows])),
            "mean_ratio_vs_lower_bound": float(ratio["params_lower_bound"].mean()),
            "max_measured_over_allowed": max(r["rel_error"] / r["max_error"] for r in rows),
            "max_seconds": max(r["seconds"] for r in rows)}


def allocation(kernels: dict[str, torch.Tensor]) -> dict:
    rows = []
    tnconv.to_mps(torch.randn(4, 4, 3, 3), max_error=0.1)  # warm-up (imports) outside timing
    for eps in ERRORS:
        for name, w in kernels.items():
            a = chain_array(w)
            t0 = time.perf_counter()
            mps = tnconv.to_mps(w, max_error=eps)
            seconds = time.perf_counter() - t0
            rows.append({"kernel": name, "model": name.split(".")[0], "shape": list(w.shape),
                         "max_error": eps, "params": mps.num_params, "bond_dims": mps.bond_dims,
                         "rel_error": mps.rel_error,
                         "params_even_split": params(a.shape, even_split(a, eps)[1]),
                         "params_uniform": params(a.shape, uniform(a, eps)[1]),
                         "params_lower_bound": lower_bound(a, eps), "seconds": seconds})
    summary: dict[str, dict] = {}
    groups = [*sorted({r["model"] for r in rows}), "overall"]
    print(f"{'model':10s} {'max_err':>7s} {'n':>3s} {'vs even':>8s} {'worst':>6s} "
          f"{'vs unif':>8s} {'LB/even':>8s} {'vs LB':>6s} {'err/max':>8s} {'max s':>6s}")
    for group in groups:
        for eps in ERRORS:
            sel = [r for r in rows if r["max_error"] == eps and group in ("overall", r["model"])]
            s = summary.setdefault(group, {})[str(eps)] = _summary(sel)
            print(f"{group:10s} {eps:7.2f} {s['kernels']:3d} "
                  f"{s['mean_ratio_vs_even_split']:8.3f} {s['worst_ratio_vs_even_split']:6.3f} "
                  f"{s['mean_ratio_vs_uniform']:8.3f} {s['mean_lower_bound_vs_even_split']:8.3f} "
                  f"{s['mean_ratio_vs_lower_bound']:6.3f} {s['max_measured_over_allowed']:8.4f} "
                  f"{s['max_seconds']:6.3f}")
    return {"summary": summary, "kernels": rows}


def timing() -> dict:
    import tensorly as tl
    from tensorly.decomposition import tensor_train

    g = torch.Generator().manual_seed(0)
    w = torch.randn(TIMING_SHAPE, generator=g)
    a = w.permute(0, 2, 3, 1).contiguous()
    ranks = [1, TIMING_BOND, TIMING_BOND, TIMING_BOND, 1]
    inputs = {"pytorch": a, "numpy": a.numpy()}

    def tensorly_tt(backend: str):  # set_backend (microseconds) is inside the timed call
        def call():
            tl.set_backend(backend)
            return tensor_train(inputs[backend], ranks)
        return call

    calls = {"tnconv.to_mps": lambda: tnconv.to_mps(w, max_bond=TIMING_BOND)}
    calls.update({f"tensorly.tensor_train({b})": tensorly_tt(b) for b in inputs})
    timed = interleaved(calls, REPEATS)  # best of REPEATS interleaved rounds
    best = {k: t.best for k, t in timed.items()}
    errs = {"tnconv.to_mps": timed["tnconv.to_mps"].result.rel_error}
    for backend in inputs:
        key = f"tensorly.tensor_train({backend})"
        tl.set_backend(backend)
        rec = torch.as_tensor(np.asarray(tl.to_numpy(tl.tt_to_tensor(timed[key].result))))
        errs[key] = float((rec.double() - a.double()).norm() / a.double().norm())
    tl.set_backend("numpy")
    for k in best:
        print(f"{k:32s} best of {REPEATS}: {best[k]:.3f}s  rel_error {errs[k]:.5f}")
    return {"shape": list(TIMING_SHAPE), "max_bond": TIMING_BOND, "best_seconds": best,
            "rel_error": errs}


def leg_order(kernels: dict[str, torch.Tensor], eps: float = 0.1) -> dict:
    """``tnconv.best_chain`` at ``eps``: the best of the 12 leg orders vs the default chain."""
    rows = []
    for name, w in kernels.items():
        t0 = time.perf_counter()
        table = tnconv.best_chain(w, max_error=eps)
        rows.append({"kernel": name, "shape": list(w.shape), "best_chain": table.best,
                     "params": table.rows[0]["num_params"],
                     "default_params": table.default_row["num_params"],
                     "seconds": time.perf_counter() - t0})
        r = rows[-1]
        print(f"{name:<28} {r['best_chain']:<14} {r['params']:>8} vs {r['default_params']:>8} "
              f"({1 - r['params'] / r['default_params']:.1%} fewer)  {r['seconds']:.1f} s")
    saving = [1 - r["params"] / r["default_params"] for r in rows]
    return {"max_error": eps, "rows": rows, "min_saving": min(saving),
            "median_saving": float(np.median(saving)), "max_saving": max(saving)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help=f"JSON path (default results/{NAME}.json)")
    args = parser.parse_args(argv)
    if THREADS:
        torch.set_num_threads(THREADS)
    env = environment(packages=("tensorly",))
    kernels = model_kernels()
    print(f"{len(kernels)} conv kernels")
    result = {"command": command_line(__file__, argv),
              "models": sorted({k.split(".")[0] for k in kernels}),
              "allocation": allocation(kernels), "leg_order": leg_order(kernels),
              "timing": timing()}
    print(f"wrote {write_result(NAME, result, args.out, env=env)}")
    return result


if __name__ == "__main__":
    main()
