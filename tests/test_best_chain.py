"""best_chain: the leg order of an MPS, checked on kernels built as exact chains in a hidden order.

References are independent of tnconv: the kernels are contracted from random site tensors
with numpy, bond dimensions are compared with ``numpy.linalg.matrix_rank`` of the bipartition
unfoldings, and parameter counts with ``sum r_left * d * r_right`` of those ranks.
"""

from __future__ import annotations

import math
from itertools import permutations

import numpy as np
import pytest
import torch
from torch import nn

import tnconv
from tnconv.mps import ChainTable, best_chain

LEGS = ("out", "in", "kh", "kw")


def _chain_tensor(dims, bond, seed):
    """Contract random site tensors of bond dimension ``bond`` (numpy, float64)."""
    rng = np.random.default_rng(seed)
    t = np.ones((1, 1))
    for k, d in enumerate(dims):
        right = 1 if k == len(dims) - 1 else bond
        site = rng.standard_normal((t.shape[-1], d, right))
        t = np.tensordot(t, site, axes=([-1], [0]))
    return t.reshape(dims)


def _hidden_kernel(order, sizes, split=None, bond=2, seed=0):
    """A kernel [out, in, kh, kw] that is an exact chain along ``order`` of (sub-)legs."""
    t = _chain_tensor([sizes[n] for n in order], bond, seed)
    physical = tnconv.legs.physical_legs(LEGS, split or {})
    t = np.transpose(t, [order.index(n) for n in physical])
    shape = [math.prod(split[n]) if split and n in split else sizes[n] for n in LEGS]
    return torch.from_numpy(np.ascontiguousarray(t).reshape(shape))


def _numpy_ranks(w, sites, sizes, physical):
    """Ranks of the unfoldings 'sites[:k+1] | rest' (numpy, float64)."""
    t = w.numpy().reshape([sizes[n] for n in physical])
    ranks = []
    for k in range(len(sites) - 1):
        left = [n for s in sites[: k + 1] for n in s]
        right = [n for n in physical if n not in left]
        m = np.transpose(t, [physical.index(n) for n in left + right])
        m = m.reshape(math.prod(sizes[n] for n in left), -1)
        ranks.append(int(np.linalg.matrix_rank(m, tol=1e-9 * np.linalg.norm(m, 2))))
    return ranks


def _param_count(dims, ranks):
    r = [1, *ranks, 1]
    return sum(r[k] * d * r[k + 1] for k, d in enumerate(dims))


def _sites(chain):
    return [tuple(s.split(",")) for s in chain.split("|")]


SIZES = {"out": 16, "in": 12, "kh": 3, "kw": 3}


def test_finds_hidden_leg_order_among_12_chains():
    hidden = ("in", "kw", "out", "kh")
    w = _hidden_kernel(hidden, SIZES)
    table = best_chain(w, max_error=1e-6)
    assert isinstance(table, ChainTable) and table.method == "enumerated"
    assert len(table) == 12
    # the 12 chains are the 24 orders up to reversal, each once
    orders = {tuple(c.split("|")) for c in table.chains}
    assert {min(p, p[::-1]) for p in orders} == {min(p, p[::-1]) for p in permutations(LEGS)}
    assert table.best in ("|".join(hidden), "|".join(hidden[::-1]))
    assert table[0]["rel_error"] < 1e-10
    assert table[0]["bond_dims"] == [2, 2, 2]
    assert table[0]["num_params"] == _param_count([12, 3, 16, 3], [2, 2, 2])
    assert table[1]["num_params"] > table[0]["num_params"]
    for row in table:  # every chain against numpy ranks of its bipartitions
        sites = _sites(row["chain"])
        ranks = _numpy_ranks(w, sites, SIZES, LEGS)
        assert row["bond_dims"] == ranks, row["chain"]
        assert row["num_params"] == _param_count([SIZES[s[0]] for s in sites], ranks)
        assert row["compression_ratio"] == pytest.approx(w.numel() / row["num_params"])
        assert row["rel_error"] <= 1e-6
    params = [r["num_params"] for r in table]
    assert params == sorted(params)
    assert table.default_chain == "out|kh|kw|in"
    assert table.default_row["chain"] == "out|kh|kw|in"
    assert table.default_row["num_params"] > table[0]["num_params"]


def test_finds_hidden_sub_leg_order_by_beam_search():
    split = {"out": (2, 2, 2), "in": (2, 2)}
    sizes = {"out0": 2, "out1": 2, "out2": 2, "in0": 2, "in1": 2, "kh": 3, "kw": 3}
    hidden = ("kh", "out1", "in0", "out2", "out0", "in1", "kw")
    w = _hidden_kernel(hidden, sizes, split=split, seed=1)
    table = best_chain(w, max_error=1e-6, split=split, beam=4)
    assert table.method == "beam"
    assert table.best in ("|".join(hidden), "|".join(hidden[::-1]))
    assert table[0]["rel_error"] < 1e-10
    assert table[0]["bond_dims"] == [2] * 6
    assert table[0]["num_params"] == _param_count([sizes[n] for n in hidden], [2] * 6)
    assert 2 <= len(table) <= 5  # at most beam chains + the default one
    physical = tnconv.legs.physical_legs(LEGS, split)
    for row in table:
        assert row["bond_dims"] == _numpy_ranks(w, _sites(row["chain"]), sizes, physical)
    assert table.default_row["chain"] == "out0|out1|out2|kh|kw|in0|in1"
    assert table.default_row["num_params"] > table[0]["num_params"]


def test_ranking_by_parameter_budget():
    w = torch.randn(8, 6, 3, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    budget = 200
    table = best_chain(w, max_params=budget)
    assert table.criterion == "max_params" and len(table) == 12
    errors = [r["rel_error"] for r in table]
    assert all(a <= b + 1e-5 for a, b in zip(errors, errors[1:]))
    assert errors[0] < errors[-1]  # the order matters at this budget
    for row in table.rows[:4]:
        chi = row["max_bond"]
        assert row["num_params"] <= budget
        mps = tnconv.to_mps(w, row["chain"], max_bond=chi)
        dense = mps.to_kernel()
        assert row["rel_error"] == pytest.approx(
            float((dense - w).norm() / w.norm()), rel=1e-6, abs=1e-12)
        bigger = tnconv.to_mps(w, row["chain"], max_bond=chi + 1)
        assert bigger.num_params > budget or bigger.bond_dims == mps.bond_dims
    exact = best_chain(w, max_params=10 * w.numel(), candidates=["out|kh|kw|in", "kh|out|in|kw"])
    assert [r["rel_error"] < 1e-10 for r in exact] == [True, True]


def test_candidates_top_and_default_error():
    w = torch.randn(8, 6, 3, 3, generator=torch.Generator().manual_seed(4))
    table = best_chain(w, candidates=["out,kh|kw|in", "out|kh|kw|in", "in|kw|kh|out"])
    assert table.method == "given" and table.target == 0.1 and len(table) == 2
    for row in table:
        mps = tnconv.to_mps(w, row["chain"], max_error=0.1)
        assert row["num_params"] == mps.num_params and row["rel_error"] <= 0.1 + 1e-6
    top = best_chain(torch.randn(8, 6, 5, generator=torch.Generator().manual_seed(6)),
                     max_error=0.3, top=2)  # Conv1d: 3 chains
    assert len(top) == 2 and top.default_row is not None and top.default_chain == "out|k|in"
    df = top.to_pandas()
    assert list(df["chain"]) == top.chains
    text = str(top)
    assert top.best in text and "num_params" in text
    assert len({len(line) for line in text.splitlines()[1:]}) == 1  # aligned columns


def test_size_one_legs_give_one_chain():
    w = torch.randn(8, 6, 1, 1, generator=torch.Generator().manual_seed(5))
    table = best_chain(w, max_error=0.2)
    assert len(table) == 1 and table.best == "out|kh|kw|in"


@pytest.mark.parametrize("kwargs, exc", [
    ({"max_error": 0.1, "max_params": 100}, ValueError),
    ({"max_error": 0.0}, ValueError),
    ({"max_error": 1.0}, ValueError),
    ({"max_error": -0.1}, ValueError),
    ({"max_error": "0.1"}, TypeError),
    ({"max_params": 0}, ValueError),
    ({"max_params": 1.5}, TypeError),
    ({"max_params": True}, TypeError),
    ({"max_params": 3, "candidates": ["out|kh|kw|in", "in|out|kh|kw"]}, ValueError),  # too few
    ({"top": 0}, ValueError),
    ({"beam": 0}, ValueError),
    ({"candidates": []}, ValueError),
    ({"candidates": "out|kh|kw|in"}, TypeError),
    ({"candidates": ["out|kh|kw"]}, ValueError),
    ({"split": {"out": (3, 3)}}, ValueError),
    ({"split": "ternary"}, ValueError),
])
def test_bad_inputs(kwargs, exc):
    with pytest.raises(exc):
        best_chain(torch.randn(8, 6, 3, 3), **kwargs)


@pytest.mark.parametrize("kernel, exc", [
    (np.zeros((8, 6, 3, 3)), TypeError),
    (torch.zeros(8, 6, 3, 3, dtype=torch.int64), TypeError),
    (torch.zeros(8), ValueError),
    (torch.full((8, 6, 3, 3), float("nan")), ValueError),
])
def test_bad_kernels(kernel, exc):
    with pytest.raises(exc):
        best_chain(kernel)


def test_atlas_best_chain_columns():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 6, 1))
    plain = tnconv.spectra_atlas(model)
    rows = tnconv.spectra_atlas(model, best_chain=True)
    assert "best_chain" not in plain[0]
    assert len(rows) == len(plain) == 2 * 7
    layers = dict(tnconv.conv_layers(model))
    for name, module in layers.items():
        table = best_chain(module.weight.detach(), max_error=0.1)
        mine = [r for r in rows if r["layer"] == name]
        assert len(mine) == 7
        for row in mine:
            assert row["best_chain"] == table.best
            assert row["best_chain_params"] == table[0]["num_params"]
            assert row["best_chain_compression_ratio"] == pytest.approx(
                module.weight.numel() / table[0]["num_params"])
            assert row["best_chain_error"] <= 0.1 + 1e-6
            assert row["default_chain_params"] == tnconv.to_mps(
                module.weight.detach(), "out|kh|kw|in", max_error=0.1).num_params
            assert row["best_chain_params"] <= row["default_chain_params"]
    with pytest.raises(TypeError):
        tnconv.spectra_atlas(model, best_chain="yes")


def test_to_mps_auto_uses_the_best_chain():
    """to_mps(cut="auto") builds the chain best_chain ranks first (hidden order found)."""
    torch.manual_seed(3)
    # an exact bond-2 chain in the order in|kw|out|kh, permuted to [out, in, kh, kw]
    a, b = torch.randn(12, 2), torch.randn(2, 3, 2)
    c, d = torch.randn(2, 16, 2), torch.randn(2, 3)
    w = torch.einsum("ia,awb,boc,ch->oihw", a, b, c, d)
    auto = tnconv.to_mps(w, "auto", max_error=0.01)
    assert auto.cut in ("in|kw|out|kh", "kh|out|kw|in")
    assert auto.num_params < tnconv.to_mps(w, max_error=0.01).num_params
    assert auto.rel_error < 1e-5
