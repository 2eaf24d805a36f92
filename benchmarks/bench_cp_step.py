"""CPConv2d training step against nn.Conv2d, and Tucker-2 / CP fits against tensorly.

Step: one forward + backward of a ``64 -> 64`` 3x3 convolution (padding 1) on a
``[batch, 64, 32, 32]`` input, dense ``nn.Conv2d`` against ``CPConv2d`` at ``ratio=4``
(``path="auto"``), timed *interleaved* (one step of each per round) so that load drift on a
shared machine hits both alike; the ratio of the medians and of the minima is reported.

Fits (``--compare``, needs tensorly): on the trained kernels (cnn4 and resnet20 on
Fashion-MNIST, every conv kernel with ``kh * kw > 1``, from the checkpoint cache; a model
without a checkpoint is skipped, never trained here), ``tnconv.to_tucker`` (HOSVD + HOOI)
against ``tensorly.decomposition.partial_tucker`` on the modes (out, in) at identical ranks,
and ``tnconv.to_cp`` against ``tensorly.decomposition.parafac`` (``init="svd"``,
``n_iter_max=100``) at equal rank.

Run::

    python benchmarks/bench_cp_step.py              # writes results/bench_cp_step_cpu.json
    python benchmarks/bench_cp_step.py --compare    # + results/bench_decomp_vs_tensorly_*.json
    python benchmarks/bench_cp_step.py --compare --models resnet20 --threads 1
"""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

import torch
from _common import (
    command_line,
    environment,
    interleaved,
    trained_kernels,
    wall_clock,
    write_result,
)
from torch import nn

# ---------------------------------------------------------------------- config
CONFIG: dict[str, Any] = {
    "batch": 32,            # images per step
    "channels": 64,         # in = out channels
    "image_size": 32,       # pixels
    "ratio": 4.0,           # CP rank from dense / factored parameters
    "warmup": 2,            # untimed steps per variant
    "rounds": 15,           # timed interleaved rounds
    "tucker_ranks": ("ratio4", "half"),  # Tucker ranks: to_tucker(ratio=4)'s, or half of each leg
    "cp_ranks": (8, 16, 32, "ratio4"),
    "retry_starts": 3,      # n_starts of a second to_cp fit where the first lost to parafac
    "models": ("cnn4", "resnet20"),
    "seed": 0,
}


def bench_step() -> dict[str, Any]:
    import tnconv

    torch.manual_seed(CONFIG["seed"])
    c, s, n = CONFIG["channels"], CONFIG["image_size"], CONFIG["batch"]
    dense = nn.Conv2d(c, c, 3, padding=1)
    cp = tnconv.CPConv2d.from_conv(dense, ratio=CONFIG["ratio"], n_iter=5)
    x, grad = torch.randn(n, c, s, s), torch.randn(n, c, s, s)
    variants = {"dense": dense, "cp": cp}

    def step(layer: nn.Module) -> None:
        layer(x).backward(grad)

    timed = interleaved({k: partial(step, layer) for k, layer in variants.items()},
                        CONFIG["rounds"], warmup=CONFIG["warmup"])
    times = {k: t.times for k, t in timed.items()}
    med = {k: t.median for k, t in timed.items()}
    best = {k: t.best for k, t in timed.items()}
    return {
        "rank": cp.rank, "path": "factored" if cp._path_cache.get(tuple(x.shape)) else "dense",
        "median_ms": {k: 1e3 * v for k, v in med.items()},
        "min_ms": {k: 1e3 * v for k, v in best.items()},
        "ratio_median": med["cp"] / med["dense"], "ratio_min": best["cp"] / best["dense"],
        "times_ms": {k: [1e3 * t for t in v] for k, v in times.items()},
    }


def _tl_tucker(w: torch.Tensor, ranks: tuple[int, int]) -> float:
    import numpy as np
    import tensorly as tl
    from tensorly.decomposition import partial_tucker

    wn = w.double().numpy()
    (core, factors), _ = partial_tucker(wn, rank=list(ranks), modes=[0, 1])
    rec = tl.tenalg.multi_mode_dot(core, factors, modes=[0, 1])
    return float(np.linalg.norm(rec - wn) / np.linalg.norm(wn))


def _tl_cp(w: torch.Tensor, rank: int) -> float:
    import numpy as np
    import tensorly as tl
    from tensorly.decomposition import parafac

    wn = w.double().numpy()
    cp = parafac(wn, rank, init="svd", n_iter_max=100, random_state=0)
    return float(np.linalg.norm(tl.cp_to_tensor(cp) - wn) / np.linalg.norm(wn))


def compare() -> dict[str, Any]:
    import warnings

    from tnconv.cp import to_cp
    from tnconv.tucker import to_tucker

    warnings.filterwarnings("ignore", module="tensorly")
    tucker, cp = [], []
    kernels = trained_kernels(CONFIG["models"], "fashion-mnist", sep=":", cached_only=True,
                              progress=False)
    for name, w in kernels:
        for mode in CONFIG["tucker_ranks"]:
            ranks = (to_tucker(w, ratio=4.0, n_iter=0).ranks if mode == "ratio4"
                     else (max(1, w.shape[0] // 2), max(1, w.shape[1] // 2)))
            hosvd = to_tucker(w, ranks=ranks, n_iter=0).rel_error
            t, sec = wall_clock(partial(to_tucker, w, ranks=ranks))
            e_tl, sec_tl = wall_clock(partial(_tl_tucker, w, ranks))
            tucker.append({"kernel": name, "shape": list(w.shape), "ranks": list(ranks),
                           "hosvd": hosvd, "tnconv": t.rel_error, "n_iter": t.n_iter,
                           "tensorly": e_tl, "s_tnconv": sec, "s_tensorly": sec_tl})
            print(f"tucker {name:28s} {ranks!s:9s} hosvd {hosvd:.6f} hooi {t.rel_error:.6f} "
                  f"({t.n_iter} it) tensorly {e_tl:.6f}  diff {t.rel_error - e_tl:+.1e}",
                  flush=True)
        ratio4 = max(1, int(w.numel() / (4.0 * sum(w.shape))))
        for r in sorted({ratio4 if r == "ratio4" else r for r in CONFIG["cp_ranks"]}):
            k, sec = wall_clock(partial(to_cp, w, r))
            try:
                e_tl, sec_tl = wall_clock(partial(_tl_cp, w, r))
            except ValueError as exc:  # tensorly's svd init fails where rank > a leg's size
                print(f"cp     {name:28s} R={r:<4d} parafac failed: {exc}")
                continue
            row = {"kernel": name, "shape": list(w.shape), "rank": r, "tnconv": k.rel_error,
                   "sweeps": len(k.als_errors), "tensorly": e_tl, "s_tnconv": sec,
                   "s_tensorly": sec_tl}
            if k.rel_error > e_tl + 1e-6:  # a worse local minimum: what more starts give
                k3, sec3 = wall_clock(partial(to_cp, w, r, n_starts=CONFIG["retry_starts"]))
                row.update({"tnconv_more_starts": k3.rel_error, "s_more_starts": sec3})
            cp.append(row)
            print(f"cp     {name:28s} R={r:<4d} tnconv {k.rel_error:.5f} ({len(k.als_errors)} "
                  f"sweeps, {sec:.2f}s) parafac {e_tl:.5f} ({sec_tl:.2f}s)  diff "
                  f"{k.rel_error - e_tl:+.1e}", flush=True)
    summary = {
        "tucker_worse_than_tensorly": sum(r["tnconv"] > r["tensorly"] + 1e-6 for r in tucker),
        "tucker_cases": len(tucker),
        "tucker_max_diff": max((r["tnconv"] - r["tensorly"] for r in tucker), default=None),
        "cp_worse_than_parafac": sum(r["tnconv"] > r["tensorly"] + 1e-6 for r in cp),
        "cp_worse_than_parafac_by_1e-4": sum(r["tnconv"] > r["tensorly"] + 1e-4 for r in cp),
        "cp_cases": len(cp),
        "cp_max_diff": max((r["tnconv"] - r["tensorly"] for r in cp), default=None),
        "cp_worse_with_retry_starts": sum(
            r.get("tnconv_more_starts", r["tnconv"]) > r["tensorly"] + 1e-6 for r in cp),
    }
    print(summary)
    return {"summary": summary, "tucker": tucker, "cp": cp}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", action="store_true", help="also fit against tensorly")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--models", nargs="+", default=None, help="models for --compare")
    args = parser.parse_args(argv)
    if args.models:
        CONFIG["models"] = tuple(args.models)
    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment()
    command = command_line(__file__, argv)
    step = bench_step()
    print(f"rank {step['rank']} ({step['path']} path): dense {step['median_ms']['dense']:.1f} "
          f"ms, CPConv2d {step['median_ms']['cp']:.1f} ms (median); ratio "
          f"{step['ratio_median']:.2f} (median) {step['ratio_min']:.2f} (min)")
    write_result("bench_cp_step_cpu", {"command": command, "config": CONFIG, "step": step},
                 env=env)
    if args.compare:
        res = {"command": command, "config": CONFIG, **compare()}
        tag = "-".join(CONFIG["models"])
        write_result(f"bench_decomp_vs_tensorly_{tag}", res,
                     env=environment(packages=("tensorly",)))


if __name__ == "__main__":
    main()
