"""Benchmark: tnconv's decompositions (MPS, Tucker-2, CP) against tensorly and quimb.

On trained kernels (every Conv2d with ``kh * kw > 1`` of ``cnn4`` and ``resnet20`` trained on
Fashion-MNIST by :func:`tnconv.checkpoints.train_or_load`, the two 1x1 shortcut convs of
``resnet20``) and two Gaussian kernels (64x64x3x3, and 512x512x3x3 for time), each row measures
tnconv and a peer in the same run, on the same float32 kernel, timed interleaved (best of
``repeats`` rounds, more for millisecond calls: until each call ran 0.05 s, at most 50):

1. **MPS / tensor train** on the chain ``out|kh|kw|in`` (peers get the kernel permuted to
   ``[out, kh, kw, in]``): tnconv :func:`tnconv.to_mps`, tensorly ``tensor_train``, quimb
   ``MatrixProductState.from_dense``.

   * ``mps_bond``: relative error and parameters at equal ``max_bond`` (4, 8, 16, 32);
   * ``mps_error``: parameters at equal error (``max_error`` 0.05, 0.1, 0.2): tnconv's
     ``max_error``; tensorly's smallest *uniform* rank meeting the error (bisection on the
     rank, the time is that of the final call); quimb with ``cutoff_mode="sum2"`` and the
     per-bond budget ``(max_error ||W||)^2 / (n - 1)`` (no renormalisation); and
     ``even-split``, the textbook TT-SVD written here (left to right, float64, each bond
     discarding at most ``max_error ||W|| / sqrt(n - 1)``), tnconv's old behaviour.

2. **Tucker-2** of the ``out`` and ``in`` legs at ranks 25 % and 50 % of each leg: tnconv
   :func:`tnconv.to_tucker` against tensorly ``partial_tucker(modes=[0, 1])`` (HOOI) and
   tensorly-torch ``TuckerTensor.from_tensor`` (tensorly's full Tucker with the spatial ranks
   kept full, its parameters counted as stored).

3. **CP** at rank 8, 32 and the rank of ~4x compression (ranks with more parameters than the
   dense kernel are left out): tnconv :func:`tnconv.to_cp` against tensorly
   ``parafac(init="svd", n_iter_max=100)``, on a subset of kernels (CP is slow; the subset is
   written in the JSON), timed once.

The 512x512x3x3 kernel (>= 1M entries) is there for time: it gets one timed call, one
``max_error`` (0.1) and one Tucker setting (25 %). Everything runs on one torch / BLAS thread:
on a shared 2-core machine two threads made the small SVDs about 100x slower (spin-waits).

Options that tnconv's functions gained recently (``sweeps`` of ``to_mps``, ``n_iter`` of
``to_tucker``) are measured as extra ``tnconv[...]`` variants only when the installed function
accepts them (checked with :func:`inspect.signature`); ``sweeps`` only at equal bond dimensions
(they refine a chain at fixed bonds, so they leave the parameters at equal error unchanged).

The aggregate compares each tnconv variant with each peer per family: settings where tnconv is
better / equal (within ``equal_tol`` of relative error, or the same parameter count) / worse,
the largest margin by which it is worse, the median parameter ratio and the median time ratio
(tnconv / peer). ``--plot`` draws ``tnconv / peer`` per setting next to the JSON.

Run::

    python benchmarks/bench_decomp.py --plot     # ~10 min on 2 busy cores, JSON and PNG
    python benchmarks/bench_decomp.py --quick    # three small synthetic kernels, seconds

Prints a table and writes ``benchmarks/results/bench_decomp_cpu.json`` (``--quick``:
``bench_decomp_cpu_quick.json``).
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import statistics
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # one BLAS thread for numpy (quimb), set before numpy starts
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import torch
from _common import command_line, environment, interleaved, trained_kernels, write_result

# ---------------------------------------------------------------------- config
CONFIG: dict[str, Any] = {
    "models": ("cnn4", "resnet20"),      # trained on `dataset` by train_or_load
    "dataset": "fashion-mnist",
    "one_by_one": ("resnet20/layer2.0.downsample.0", "resnet20/layer3.0.downsample.0"),
    "random_shapes": ((64, 64, 3, 3), (512, 512, 3, 3)),  # Gaussian kernels
    "quick_shapes": ((16, 8, 3, 3), (12, 6, 1, 1)),      # --quick: Gaussian + one low-rank
    "chain": "out|kh|kw|in",
    "max_bonds": (4, 8, 16, 32),
    "max_errors": (0.05, 0.1, 0.2),       # relative Frobenius error
    "tucker_fractions": (0.25, 0.5),     # rank / leg size, for out and in
    "tucker_n_iter": 10,                 # tnconv[n_iter=...] variant, when accepted
    "mps_sweeps": 2,                     # tnconv[sweeps=...] variant, when accepted
    "cp_ranks": (8, 32),                 # plus the ~4x compression rank
    "cp_ratio": 4.0,
    "cp_n_iter_max": 100,                # tensorly parafac
    "cp_kernels": (                      # CP is slow: a subset, every shape once or twice
        "resnet20/conv1", "resnet20/layer1.0.conv1", "resnet20/layer1.2.conv2",
        "resnet20/layer2.1.conv1", "resnet20/layer2.2.conv2", "resnet20/layer3.0.conv1",
        "resnet20/layer3.1.conv1", "resnet20/layer3.2.conv2", "cnn4/block1.conv",
        "cnn4/block2.conv", "cnn4/block3.conv", "gauss/64x64x3x3"),
    "repeats": 3,                        # timed calls per side (best kept); CP: cp_repeats
    "cp_repeats": 1,
    "equal_tol": 1e-6,                   # |err_tnconv - err_peer| below this: equal
    "seed": 0,
    "threads": 1,                        # torch intra-op threads: on a shared machine two
                                         # threads made small SVDs ~100x slower (spin-waits)
    "big": {                             # kernels of >= 1M entries (512x512x3x3): for time
        "min_entries": 1_000_000, "repeats": 1, "max_errors": (0.1,),
        "tucker_fractions": (0.25,),
    },
    "quick": {                           # --quick (the test): replaces the entries above
        "max_bonds": (2, 4), "max_errors": (0.1,), "tucker_fractions": (0.5,),
        "cp_ranks": (), "cp_kernels": ("lowrank/8x6x3x3",), "repeats": 1, "cp_repeats": 1,
    },
}
# -------------------------------------------------------------------------------------------

Row = dict[str, Any]


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` takes the keyword ``name`` (options added by newer tnconv versions)."""
    return name in inspect.signature(fn).parameters


def rel_error(approx: torch.Tensor, ref: torch.Tensor) -> float:
    """``||approx - ref||_F / ||ref||_F`` in float64."""
    ref = ref.detach().double()
    return float(torch.linalg.vector_norm(approx.detach().double() - ref)
                 / torch.linalg.vector_norm(ref))


#: Millisecond calls get more interleaved rounds (until every call ran 0.05 s in total, at
#: most 50 rounds): a best of 3 at 0.1 ms is mostly the machine's noise. Every call is timed
#: by ``_common.interleaved(calls, repeats, **MORE_ROUNDS)``; a row keeps the last result
#: and the best time.
MORE_ROUNDS: dict[str, Any] = {"min_total_s": 0.05, "max_rounds": 50}


# ------------------------------------------------------------------ kernels


def _gaussian(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))


def _low_rank(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A kernel with a fast-decaying spectrum on every cut (a sum of a few product terms)."""
    g = torch.Generator().manual_seed(seed)
    terms = [torch.einsum("o,i,h,w->oihw", *(torch.randn(n, generator=g) for n in shape))
             * 0.5 ** k for k in range(4)]
    return sum(terms) + 1e-3 * torch.randn(shape, generator=g)


def kernels(quick: bool = False, models: tuple[str, ...] | None = None
            ) -> list[tuple[str, torch.Tensor]]:
    """The kernels measured: ``(name, float32 weight)``.

    ``quick``: two Gaussian kernels and one low-rank kernel, no trained model (no training).
    ``models``: the trained models (default CONFIG's; trained now if not in the cache).
    """
    if quick:
        out = [(f"gauss/{'x'.join(map(str, s))}", _gaussian(s, CONFIG["seed"] + i))
               for i, s in enumerate(CONFIG["quick_shapes"])]
        return out + [("lowrank/8x6x3x3", _low_rank((8, 6, 3, 3), CONFIG["seed"]))]
    out = [(name, w.float().clone()) for name, w in trained_kernels(
        CONFIG["models"] if models is None else models, CONFIG["dataset"], sep="/",
        one_by_one=CONFIG["one_by_one"])]
    for i, s in enumerate(CONFIG["random_shapes"]):
        out.append((f"gauss/{'x'.join(map(str, s))}", _gaussian(s, CONFIG["seed"] + i)))
    return out


# ------------------------------------------------------------------ tensor trains


def _chain(cores: list[torch.Tensor]) -> torch.Tensor:
    """Contract TT cores ``[r_{k-1}, n_k, r_k]`` to the dense tensor."""
    out = cores[0]
    for c in cores[1:]:
        out = torch.tensordot(out, c, dims=([out.dim() - 1], [0]))
    return out.reshape(out.shape[1:-1])


def even_split_tt(x: torch.Tensor, max_error: float) -> list[torch.Tensor]:
    """Textbook TT-SVD (Oseledets 2011), left to right in float64: every one of the ``n - 1``
    bonds discards at most ``max_error * ||x|| / sqrt(n - 1)``, so ``||x - tt|| <= max_error
    ||x||``. Returns the cores ``[r_{k-1}, n_k, r_k]`` (float64)."""
    x = x.detach().double()
    dims, n = tuple(x.shape), x.dim()
    budget = max_error * float(torch.linalg.vector_norm(x)) / math.sqrt(n - 1)
    cores, rest, r = [], x, 1
    for k in range(n - 1):
        u, s, vh = torch.linalg.svd(rest.reshape(r * dims[k], -1), full_matrices=False)
        tails = torch.cat([s.flip(0).square().cumsum(0).flip(0).sqrt(), s.new_zeros(1)])
        rank = max(1, int(torch.nonzero(tails <= budget)[0]))
        cores.append(u[:, :rank].reshape(r, dims[k], rank))
        rest, r = s[:rank, None] * vh[:rank], rank
    cores.append(rest.reshape(r, dims[-1], 1))
    return cores


def _even_split_call(x: torch.Tensor, max_error: float) -> tuple[torch.Tensor, int, list[int]]:
    cores = even_split_tt(x, max_error)
    return (_chain(cores), sum(int(c.numel()) for c in cores),
            [int(c.shape[2]) for c in cores[:-1]])


def _tensorly_tt(x: torch.Tensor, rank: int) -> tuple[torch.Tensor, int, list[int]]:
    import tensorly as tl
    from tensorly.decomposition import tensor_train

    tt = tensor_train(x, rank=[1] + [rank] * (x.dim() - 1) + [1])
    return tl.tt_to_tensor(tt), sum(int(f.numel()) for f in tt.factors), list(tt.rank[1:-1])


def _quimb_tt(x: torch.Tensor, **opts: Any) -> tuple[torch.Tensor, int, list[int]]:
    import quimb.tensor as qtn

    mps = qtn.MatrixProductState.from_dense(x.numpy(), dims=tuple(x.shape), renorm=False,
                                            **opts)
    dense = torch.from_numpy(mps.to_dense().reshape(x.shape))
    return dense, sum(int(t.size) for t in mps.tensors), list(mps.bond_sizes())


def _tnconv_mps(w: torch.Tensor, **opts: Any) -> tuple[torch.Tensor, int, list[int]]:
    import tnconv

    mps = tnconv.to_mps(w, CONFIG["chain"], **opts)
    return mps.to_kernel(), mps.num_params, list(mps.bond_dims)


def _mps_variants() -> dict[str, dict[str, Any]]:
    """tnconv's MPS variants: the default call and, when accepted, ``sweeps``."""
    import tnconv

    out: dict[str, dict[str, Any]] = {"tnconv": {}}
    if _accepts(tnconv.to_mps, "sweeps"):
        out[f"tnconv[sweeps={CONFIG['mps_sweeps']}]"] = {"sweeps": CONFIG["mps_sweeps"]}
    return out


def _row(family: str, name: str, w: torch.Tensor, setting: str, method: str,
         res: tuple[torch.Tensor, int, list[int]], ref: torch.Tensor, dt: float) -> Row:
    approx, params, bonds = res
    return {"family": family, "kernel": name, "shape": list(w.shape), "setting": setting,
            "method": method, "rel_error": rel_error(approx, ref), "params": int(params),
            "ranks": [int(b) for b in bonds], "time_s": dt}


def mps_bond_rows(name: str, w: torch.Tensor, cfg: dict[str, Any]) -> list[Row]:
    """Error and parameters at equal ``max_bond``: tnconv, tensorly, quimb."""
    x = w.permute(0, 2, 3, 1).contiguous()
    rows = []
    for chi in cfg["max_bonds"]:
        calls: dict[str, Callable[[], Any]] = {
            m: partial(_tnconv_mps, w, max_bond=chi, **o) for m, o in _mps_variants().items()}
        calls["tensorly"] = partial(_tensorly_tt, x, chi)
        calls["quimb"] = partial(_quimb_tt, x, max_bond=chi, cutoff=0.0)
        for method, t in interleaved(calls, cfg["repeats"], **MORE_ROUNDS).items():
            res, dt = t.result, t.best
            ref = w if method.startswith("tnconv") else x
            rows.append(_row("mps_bond", name, w, f"max_bond={chi}", method, res, ref, dt))
    return rows


def _smallest_uniform_rank(x: torch.Tensor, target: float, cache: dict[int, float]) -> int:
    """Smallest uniform tensorly TT rank whose error is ``<= target`` (bisection; the error
    decreases with the rank up to rounding, and the full rank is exact)."""
    def err(r: int) -> float:
        if r not in cache:
            cache[r] = rel_error(_tensorly_tt(x, r)[0], x)
        return cache[r]

    lo, hi = 1, max(min(math.prod(x.shape[: k + 1]), math.prod(x.shape[k + 1:]))
                    for k in range(x.dim() - 1))
    if err(lo) <= target:
        return lo
    while hi - lo > 1:  # err(lo) > target >= err(hi)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if err(mid) <= target else (mid, hi)
    return hi


def mps_error_rows(name: str, w: torch.Tensor, cfg: dict[str, Any]) -> list[Row]:
    """Parameters at equal error: tnconv's ``max_error``, tensorly's smallest uniform rank,
    quimb's ``sum2`` cutoff and the even-split TT-SVD."""
    x = w.permute(0, 2, 3, 1).contiguous()
    n = x.dim()
    norm2 = float(torch.linalg.vector_norm(x.double())) ** 2
    cache: dict[int, float] = {}
    rows = []
    for eps in cfg["max_errors"]:
        t0 = time.perf_counter()
        r = _smallest_uniform_rank(x, eps, cache)
        search_s = time.perf_counter() - t0

        # the default call only: sweeps (fixed bond dimensions) do not change the parameters
        calls: dict[str, Callable[[], Any]] = {"tnconv": partial(_tnconv_mps, w, max_error=eps)}
        calls["tensorly"] = partial(_tensorly_tt, x, r)
        calls["quimb"] = partial(_quimb_tt, x, cutoff=eps ** 2 * norm2 / (n - 1),
                                 cutoff_mode="sum2")
        calls["even-split"] = partial(_even_split_call, x, eps)
        for method, t in interleaved(calls, cfg["repeats"], **MORE_ROUNDS).items():
            res, dt = t.result, t.best
            ref = w if method.startswith("tnconv") else x
            row = _row("mps_error", name, w, f"max_error={eps}", method, res, ref, dt)
            row["meets"] = row["rel_error"] <= eps * (1 + 1e-6)
            if method == "tensorly":
                row.update(uniform_rank=r, search_s=search_s, search_calls=len(cache))
            rows.append(row)
    return rows


# ------------------------------------------------------------------ Tucker-2 and CP


def _tucker_variants() -> dict[str, dict[str, Any]]:
    import tnconv

    out: dict[str, dict[str, Any]] = {"tnconv": {}}
    if _accepts(tnconv.to_tucker, "n_iter"):
        out[f"tnconv[n_iter={CONFIG['tucker_n_iter']}]"] = {"n_iter": CONFIG["tucker_n_iter"]}
    return out


def tucker_rows(name: str, w: torch.Tensor, cfg: dict[str, Any]) -> list[Row]:
    """Error at equal Tucker-2 ranks: tnconv, tensorly HOOI, tensorly-torch."""
    import tensorly as tl
    from tensorly.decomposition import partial_tucker

    import tnconv

    def tn(ranks: tuple[int, int], o: dict[str, Any]) -> tuple[torch.Tensor, int, list[int]]:
        t = tnconv.to_tucker(w, ranks=ranks, **o)
        return t.to_kernel(), t.num_params, list(t.ranks)

    def tly(ranks: tuple[int, int]) -> tuple[torch.Tensor, int, list[int]]:
        (core, factors), _ = partial_tucker(w, rank=list(ranks), modes=[0, 1])
        dense = tl.tenalg.multi_mode_dot(core, factors, modes=[0, 1])
        return dense, int(core.numel()) + sum(int(f.numel()) for f in factors), list(ranks)

    def tlt(ranks: tuple[int, int]) -> tuple[torch.Tensor, int, list[int]]:
        import tltorch

        t = tltorch.TuckerTensor.from_tensor(w, rank=(*ranks, *w.shape[2:]))
        return t.to_tensor(), sum(int(p.numel()) for p in t.parameters()), list(ranks)

    rows = []
    settings = sorted({tuple(max(1, round(f * d)) for d in w.shape[:2])
                       for f in cfg["tucker_fractions"]})
    for ranks in settings:
        calls: dict[str, Callable[[], Any]] = {
            m: partial(tn, ranks, o) for m, o in _tucker_variants().items()}
        calls["tensorly"] = partial(tly, ranks)
        calls["tltorch"] = partial(tlt, ranks)
        for method, t in interleaved(calls, cfg["repeats"], **MORE_ROUNDS).items():
            res, dt = t.result, t.best
            rows.append(_row("tucker", name, w, f"ranks={ranks}", method, res, w, dt))
    return rows


def cp_ranks(shape: tuple[int, ...], cfg: dict[str, Any]) -> list[int]:
    """CP ranks measured: ``cp_ranks`` and the ~``cp_ratio`` compression rank, dropping ranks
    with more parameters than the dense kernel."""
    dense, per_rank = math.prod(shape), sum(shape)
    ranks = {*cfg["cp_ranks"], max(1, int(dense / (cfg["cp_ratio"] * per_rank)))}
    return sorted(r for r in ranks if r * per_rank <= dense)


def cp_rows(name: str, w: torch.Tensor, cfg: dict[str, Any]) -> list[Row]:
    """Error at equal CP rank: tnconv ALS and tensorly parafac."""
    import tensorly as tl
    from tensorly.decomposition import parafac

    import tnconv

    def tn(rank: int) -> tuple[torch.Tensor, int, list[int]]:
        c = tnconv.to_cp(w, rank=rank)
        return c.to_kernel(), c.num_params, [rank]

    def tly(rank: int) -> tuple[torch.Tensor, int, list[int]]:
        cp = parafac(w, rank=rank, init="svd", n_iter_max=cfg["cp_n_iter_max"],
                     random_state=0)  # its random columns (rank > a leg) fixed
        # the weights (all ones unless normalised) fold into a factor: not counted
        return tl.cp_to_tensor(cp), rank * sum(w.shape), [rank]

    rows = []
    for rank in cp_ranks(tuple(w.shape), cfg):
        calls = {"tnconv": partial(tn, rank), "tensorly": partial(tly, rank)}
        for method, t in interleaved(calls, cfg["cp_repeats"], **MORE_ROUNDS).items():
            res, dt = t.result, t.best
            rows.append(_row("cp", name, w, f"rank={rank}", method, res, w, dt))
    return rows


# ------------------------------------------------------------------ aggregate and report


def _compare(tn: Row, peer: Row, tol: float) -> tuple[str, float] | None:
    """``(verdict, margin)`` of one tnconv row against one peer row of the same setting.

    Error families: margin = tnconv's error - the peer's. ``mps_error``: margin = parameter
    ratio - 1, compared only where both meet the error (None otherwise).
    """
    if tn["family"] == "mps_error":
        if not (tn["meets"] and peer["meets"]):
            return None
        margin = tn["params"] / peer["params"] - 1.0
        return ("better" if margin < 0 else "worse" if margin > 0 else "equal"), margin
    margin = tn["rel_error"] - peer["rel_error"]
    return ("better" if margin < -tol else "worse" if margin > tol else "equal"), margin


def aggregate(rows: list[Row], tol: float) -> dict[str, dict[str, Any]]:
    """Per family and (tnconv variant, peer): better / equal / worse counts, the largest
    worse margin, median parameter and time ratios, and the settings where tnconv is worse."""
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r["family"], r["kernel"], r["setting"]), []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for (family, kernel, setting), members in groups.items():
        for tn in (r for r in members if r["method"].startswith("tnconv")):
            for peer in (r for r in members if not r["method"].startswith("tnconv")):
                key = f"{family}: {tn['method']} vs {peer['method']}"
                a = out.setdefault(key, {"family": family, "tnconv": tn["method"],
                                         "peer": peer["method"], "better": 0, "equal": 0,
                                         "worse": 0, "not_compared": 0, "max_worse": 0.0,
                                         "param_ratios": [], "time_ratios": [],
                                         "worse_rows": []})
                a["time_ratios"].append(tn["time_s"] / peer["time_s"])
                verdict = _compare(tn, peer, tol)
                if verdict is None:
                    a["not_compared"] += 1
                    continue
                a[verdict[0]] += 1
                a["param_ratios"].append(tn["params"] / peer["params"])
                if verdict[0] == "worse":
                    a["max_worse"] = max(a["max_worse"], verdict[1])
                    a["worse_rows"].append({"kernel": kernel, "setting": setting,
                                            "margin": verdict[1]})
    for a in out.values():
        pr, tr = a.pop("param_ratios"), a.pop("time_ratios")
        a["median_param_ratio"] = statistics.median(pr) if pr else None
        a["median_time_ratio"] = statistics.median(tr) if tr else None
    return out


def print_table(agg: dict[str, dict[str, Any]]) -> None:
    """The aggregate as a table (margins: error difference, or parameter ratio - 1)."""
    print(f"\n{'family: tnconv vs peer':<46} {'better':>6} {'equal':>6} {'worse':>6} "
          f"{'n/c':>4} {'max worse':>10} {'params':>7} {'time':>7}")
    for key, a in agg.items():
        pr = a["median_param_ratio"]
        print(f"{key:<46} {a['better']:>6} {a['equal']:>6} {a['worse']:>6} "
              f"{a['not_compared']:>4} {a['max_worse']:>10.2e} "
              f"{'-' if pr is None else f'{pr:.3f}':>7} {a['median_time_ratio']:>7.2f}")
    print("(n/c: not compared, a side missed the error; params, time: medians of tnconv/peer; "
          "max worse: error difference, or parameter ratio - 1 for mps_error)")


def plot(report: dict[str, Any], path: Path) -> None:
    """One panel per family: ``tnconv / peer`` of every setting (relative error; parameters
    for ``mps_error``), one strip per (tnconv variant, peer); below 1: tnconv better. Settings
    where the peer's error is below 1e-3 (near-exact, float32 rounding) are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    by = {(r["family"], r["kernel"], r["setting"], r["method"]): r for r in rows}
    families = ("mps_bond", "mps_error", "tucker", "cp")
    fig, axes = plt.subplots(1, len(families), figsize=(4.5 * len(families), 4.5))
    for ax, family in zip(axes, families):
        key = "params" if family == "mps_error" else "rel_error"
        labels = []
        for a in (a for a in report["aggregate"].values() if a["family"] == family):
            ratios = [r[key] / by[(f, k, s, a["peer"])][key]
                      for (f, k, s, m), r in by.items()
                      if f == family and m == a["tnconv"] and (f, k, s, a["peer"]) in by
                      and by[(f, k, s, a["peer"])][key] > 1e-3]  # not rounding noise
            x = len(labels) + torch.linspace(-0.2, 0.2, max(len(ratios), 1))[: len(ratios)]
            ax.scatter(x.tolist(), ratios, s=8, alpha=0.6)
            labels.append(f"{a['tnconv']}\nvs {a['peer']}")
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(family)
        ax.set_ylabel(f"tnconv / peer {key} (below 1: tnconv better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _signatures() -> dict[str, str]:
    """The signatures of the tnconv functions measured (their options change over versions)."""
    import tnconv

    return {f: str(inspect.signature(getattr(tnconv, f))) for f in ("to_mps", "to_tucker", "to_cp")}


def settings(quick: bool = False, repeats: int | None = None) -> dict[str, Any]:
    """CONFIG, with its ``quick`` entries applied for ``--quick`` and ``repeats`` when given."""
    cfg = {k: v for k, v in CONFIG.items() if k not in ("quick", "big")}
    if quick:
        cfg.update(CONFIG["quick"])
    if repeats:
        cfg["repeats"] = repeats
    return cfg


def _warm_up(cfg: dict[str, Any]) -> None:
    """One untimed call of every method on a tiny kernel: imports and numba compilation."""
    w = _gaussian((4, 3, 3, 3), 0)
    mps_bond_rows("warm-up", w, {**cfg, "max_bonds": (2,), "repeats": 1})
    mps_error_rows("warm-up", w, {**cfg, "max_errors": (0.2,), "repeats": 1})
    tucker_rows("warm-up", w, {**cfg, "tucker_fractions": (0.5,), "repeats": 1})
    cp_rows("warm-up", w, {**cfg, "cp_ranks": (), "cp_repeats": 1})


def run(quick: bool = False, repeats: int | None = None,
        families: tuple[str, ...] = ("mps", "tucker", "cp"), progress: bool = True,
        models: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Measure every family on every kernel; returns the report (rows, aggregate, environment).

    ``quick``: the small synthetic kernels of :func:`kernels` and CONFIG's ``quick`` entries.
    """
    import tensorly as tl

    cfg = settings(quick, repeats)
    ks = kernels(quick, models)
    rows: list[Row] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg["threads"])
    env = environment(packages=("tensorly", "tltorch", "quimb"))
    t_start = time.perf_counter()
    with tl.backend_context("pytorch"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tensorly: rank capped at a leg's size
        _warm_up(cfg)
        for i, (name, w) in enumerate(ks):
            t0 = time.perf_counter()
            big = CONFIG["big"]
            kcfg = {**cfg, **big} if w.numel() >= big["min_entries"] else cfg
            if "mps" in families:
                rows += mps_bond_rows(name, w, kcfg) + mps_error_rows(name, w, kcfg)
            if "tucker" in families:
                rows += tucker_rows(name, w, kcfg)
            if "cp" in families and name in cfg["cp_kernels"]:
                rows += cp_rows(name, w, kcfg)
            if progress:
                print(f"[{i + 1}/{len(ks)}] {name} {tuple(w.shape)}: "
                      f"{time.perf_counter() - t0:.1f} s", flush=True)
    torch.set_num_threads(threads)
    return {
        "benchmark": "bench_decomp: tnconv to_mps / to_tucker / to_cp vs tensorly and quimb",
        "command": command_line(__file__),
        "environment": env,
        "tnconv_signatures": _signatures(),
        "quick": quick,
        "config": cfg,
        "big_kernels": {"rule": CONFIG["big"],
                        "names": [n for n, w in ks if w.numel() >= CONFIG["big"]["min_entries"]]},
        "kernels": [{"name": n, "shape": list(w.shape)} for n, w in ks],
        "cp_kernels": [n for n, _ in ks if n in cfg["cp_kernels"]],
        "total_s": time.perf_counter() - t_start,
        "aggregate": aggregate(rows, cfg["equal_tol"]),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three small synthetic kernels")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per side")
    parser.add_argument("--models", nargs="+", default=None,
                        help=f"trained models (default: {' '.join(CONFIG['models'])})")
    parser.add_argument("--out", default=None, help="JSON path")
    parser.add_argument("--plot", action="store_true", help="also a PNG next to the JSON")
    args = parser.parse_args(argv)
    report = run(quick=args.quick, repeats=args.repeats,
                 models=tuple(args.models) if args.models else None)
    report["command"] = command_line(__file__, argv)
    env = report["environment"]
    print_table(report["aggregate"])
    print(f"{len(report['kernels'])} kernels, {len(report['rows'])} rows, "
          f"{report['total_s']:.0f} s, torch {torch.__version__}, {env['threads']} threads, "
          f"load {env['load_average']}")
    out = write_result(f"bench_decomp_cpu{'_quick' if args.quick else ''}", report, args.out)
    print(f"wrote {out}")
    if args.plot:
        plot(report, out.with_suffix(".png"))
        print(f"wrote {out.with_suffix('.png')}")
    return report


if __name__ == "__main__":
    main()
