"""benchmarks/bench_decomp.py: its reference TT-SVD, its peer search, its aggregate, and one
``--quick`` run (three small synthetic kernels; the peers tensorly, quimb and tltorch are
optional: the tests that need them skip without them)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import load_benchmark

load_benchmark("_common")  # the scripts' sibling module: `import _common` finds it loaded
bench = load_benchmark("bench_decomp")


def _kernel(shape=(6, 5, 3, 3), seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64)


def test_even_split_tt_exact_without_truncation():
    x = _kernel().permute(0, 2, 3, 1)
    cores = bench.even_split_tt(x, 0.0)
    assert [c.shape[1] for c in cores] == list(x.shape)
    assert bench.rel_error(bench._chain(cores), x) < 1e-12


@pytest.mark.parametrize("max_error", [0.05, 0.2, 0.5])
def test_even_split_tt_meets_the_bound_and_matches_numpy_first_bond(max_error):
    x = _kernel((8, 4, 3, 3), seed=1).permute(0, 2, 3, 1)
    cores = bench.even_split_tt(x, max_error)
    assert bench.rel_error(bench._chain(cores), x) <= max_error + 1e-12
    # first bond: the smallest rank whose discarded tail is within the per-bond budget
    s = np.linalg.svd(x.numpy().reshape(8, -1), compute_uv=False)
    budget = max_error * np.linalg.norm(x.numpy()) / math.sqrt(3)
    tails = [math.sqrt(float(np.sum(s[r:] ** 2))) for r in range(len(s) + 1)]
    expected = next(r for r in range(1, len(s) + 1) if tails[r] <= budget)
    assert cores[0].shape[2] == expected


def test_rel_error_matches_numpy():
    a, b = _kernel(seed=2), _kernel(seed=3)
    ref = np.linalg.norm(a.numpy() - b.numpy()) / np.linalg.norm(b.numpy())
    assert bench.rel_error(a.float(), b) == pytest.approx(ref, rel=1e-6)


def _row(family, method, err, params, t=1.0, meets=True, setting="s"):
    return {"family": family, "kernel": "k", "setting": setting, "method": method,
            "rel_error": err, "params": params, "time_s": t, "meets": meets}


def test_aggregate_counts_margins_and_ratios():
    rows = [
        _row("mps_bond", "tnconv", 0.10, 10, 2.0, setting="a"),
        _row("mps_bond", "tensorly", 0.20, 10, 1.0, setting="a"),   # tnconv better
        _row("mps_bond", "tnconv", 0.30, 10, 1.0, setting="b"),
        _row("mps_bond", "tensorly", 0.30 + 5e-7, 10, 4.0, setting="b"),  # equal (tol 1e-6)
        _row("mps_bond", "tnconv", 0.40, 10, 3.0, setting="c"),
        _row("mps_bond", "tensorly", 0.35, 10, 1.0, setting="c"),   # worse by 0.05
        _row("mps_error", "tnconv", 0.09, 80, setting="d"),
        _row("mps_error", "quimb", 0.01, 100, setting="d"),         # better: 0.8x params
        _row("mps_error", "tnconv", 0.09, 120, setting="e"),
        _row("mps_error", "quimb", 0.09, 100, setting="e"),         # worse: 1.2x
        _row("mps_error", "tnconv", 0.09, 50, setting="f"),
        _row("mps_error", "quimb", 0.2, 40, meets=False, setting="f"),  # not compared
    ]
    agg = bench.aggregate(rows, 1e-6)
    a = agg["mps_bond: tnconv vs tensorly"]
    assert (a["better"], a["equal"], a["worse"]) == (1, 1, 1)
    assert a["max_worse"] == pytest.approx(0.05)
    assert a["median_time_ratio"] == pytest.approx(2.0)  # ratios 2, 0.25, 3
    assert a["worse_rows"] == [{"kernel": "k", "setting": "c", "margin": pytest.approx(0.05)}]
    b = agg["mps_error: tnconv vs quimb"]
    assert (b["better"], b["equal"], b["worse"], b["not_compared"]) == (1, 0, 1, 1)
    assert b["max_worse"] == pytest.approx(0.2)
    assert b["median_param_ratio"] == pytest.approx(1.0)  # 0.8 and 1.2


def test_cp_ranks_drop_ranks_above_the_dense_size():
    cfg = bench.settings()
    assert bench.cp_ranks((16, 1, 3, 3), cfg) == [1]       # 144 entries, 23 per rank
    assert bench.cp_ranks((32, 32, 3, 3), cfg) == [8, 32]  # 4x rank: 9216 / (4 * 70) = 32


def test_smallest_uniform_rank_is_minimal():
    pytest.importorskip("tensorly")
    import tensorly as tl

    x = _kernel((8, 6, 3, 3), seed=4).float().permute(0, 2, 3, 1).contiguous()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small SVDs: one thread (much faster on a busy machine)
    try:
        _check_minimal(x, tl)
    finally:
        torch.set_num_threads(threads)


def _check_minimal(x, tl):
    with tl.backend_context("pytorch"):
        cache: dict[int, float] = {}
        r = bench._smallest_uniform_rank(x, 0.3, cache)
        assert bench.rel_error(bench._tensorly_tt(x, r)[0], x) <= 0.3
        assert r == 1 or bench.rel_error(bench._tensorly_tt(x, r - 1)[0], x) > 0.3


@pytest.fixture(scope="module")
def quick_report():
    for peer in ("tensorly", "quimb", "tltorch"):
        pytest.importorskip(peer)
    return bench.run(quick=True, progress=False)


def test_quick_run_measures_every_family_against_its_peers(quick_report):
    rows = quick_report["rows"]
    methods = {(r["family"], r["method"]) for r in rows}
    for family, peers in (("mps_bond", ("tensorly", "quimb")),
                          ("mps_error", ("tensorly", "quimb", "even-split")),
                          ("tucker", ("tensorly", "tltorch")), ("cp", ("tensorly",))):
        assert (family, "tnconv") in methods
        assert all((family, p) in methods for p in peers)
        assert any(k.startswith(f"{family}: tnconv vs") for k in quick_report["aggregate"])
    for a in quick_report["aggregate"].values():
        n = sum(1 for r in rows if r["family"] == a["family"] and r["method"] == a["tnconv"])
        assert a["better"] + a["equal"] + a["worse"] + a["not_compared"] == n
    assert all(r["time_s"] > 0 and 0 <= r["rel_error"] <= 1 + 1e-6 for r in rows)


def test_quick_run_errors_agree_across_implementations(quick_report):
    rows = quick_report["rows"]
    by = {(r["family"], r["kernel"], r["setting"], r["method"]): r for r in rows}
    for (family, kernel, setting, method), r in by.items():
        if family == "mps_bond" and method == "tensorly":
            # the same left-to-right TT-SVD at the same ranks: tensorly and quimb agree
            q = by[(family, kernel, setting, "quimb")]
            assert r["ranks"] == q["ranks"]
            assert r["rel_error"] == pytest.approx(q["rel_error"], abs=1e-5)
        if family == "mps_error":
            eps = float(setting.split("=")[1])
            if method in ("tnconv", "even-split", "quimb"):
                assert r["meets"], (kernel, setting, method, r["rel_error"])
            assert r["rel_error"] <= eps * (1 + 1e-6) or not r["meets"]
