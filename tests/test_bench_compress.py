"""benchmarks/bench_compress.py: its data split, its goal evaluation, the tltorch rank search, and
its core (every allocation mode, fine-tuning, the plot) on a toy model and synthetic data."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import load_benchmark
from tnconv.data import ImageDataset

load_benchmark("_common")  # the scripts' sibling module: `import _common` finds it loaded
bench = load_benchmark("bench_compress")


def _dataset(n: int, split: str, seed: int) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = torch.randn(n, 1, 8, 8, generator=g) + labels.view(n, 1, 1, 1) * 0.3
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.float32)  # an id per image
    return ImageDataset(images, labels, "fashion-mnist", split)


def _toy() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def _cfg(**kw) -> dict:
    return {**bench.CONFIG, "sens_images": 40, "heldout_images": 60, "finetune_images": 64,
            "cache": False, **kw}


def test_split_is_disjoint_and_sized():
    test, train = _dataset(120, "test", 0), _dataset(200, "train", 1)
    sens, held, tune = bench.split_data(test, train, _cfg())
    ids_s = set(sens.images[:, 0, 0, 0].tolist())
    ids_h = set(held.images[:, 0, 0, 0].tolist())
    assert (len(sens), len(held), len(tune)) == (40, 60, 64)
    assert len(ids_s) == 40 and len(ids_h) == 60 and not ids_s & ids_h
    assert len(bench.split_data(test, train, _cfg(finetune_images=None))[2]) == 200
    with pytest.raises(ValueError, match="test images"):
        bench.split_data(test, train, _cfg(heldout_images=100))


def _row(model, mode, budget, before, after=None, latency=None, dense=0.9):
    return {"model": model, "mode": mode, "budget": budget, "accuracy_before": before,
            "accuracy_after": after, "latency_ratio": latency, "accuracy_dense": dense}


def test_goals_follow_the_rows():
    rows = [_row("m", "uniform", 0.5, 0.80), _row("m", "energy", 0.5, 0.85),
            _row("m", "vbmf", 0.5, 0.70), _row("m", "sensitivity", 0.5, 0.86),
            _row("m", "uniform", 0.25, 0.60), _row("m", "sensitivity", 0.25, 0.55, 0.895, 0.7)]
    g = bench.goals(rows, bench.CONFIG)
    a = g["a_sensitivity_best_before"]["m"]
    assert a["budgets"]["0.5"] == {"sensitivity": 0.86, "best_other": 0.85, "passed": True}
    assert a["budgets"]["0.25"]["passed"] is False and a["passed"] is False
    assert g["b_finetuned_vs_dense"]["m"]["passed"] is True
    assert math.isclose(g["b_finetuned_vs_dense"]["m"]["gap"], 0.005)
    assert g["c_latency_ratio"]["m"] == {"ratio": 0.7, "passed": True}
    rows[-1].update(accuracy_after=0.88, latency_ratio=0.81)
    g = bench.goals(rows, bench.CONFIG)
    assert not g["b_finetuned_vs_dense"]["m"]["passed"]
    assert not g["c_latency_ratio"]["m"]["passed"]


def test_tltorch_fraction_keeps_the_budget():
    tltorch = pytest.importorskip("tltorch")
    pytest.importorskip("tensorly")
    conv = nn.Conv2d(24, 40, 3, bias=False)
    target = 0.25 * conv.weight.numel()
    frac = bench._tucker_fraction(conv.weight.shape, target)
    layer = tltorch.FactorizedConv.from_conv(conv, rank=frac, factorization="tucker",
                                             implementation="factorized",
                                             fixed_rank_modes="spatial")
    n = sum(p.numel() for p in layer.parameters())
    assert 0.5 * target < n <= target
    assert tuple(layer.weight.rank)[2:] == (3, 3)


def test_run_model_every_mode_and_plot(tmp_path):
    test, train = _dataset(120, "test", 0), _dataset(200, "train", 1)
    cfg = _cfg(budgets=[0.5], tltorch=True)
    data = bench.split_data(test, train, cfg)
    seen = []
    dense, rows, notes = bench.run_model(_toy(), "toy", data, cfg, torch.device("cpu"),
                                         on_row=lambda rs, ns: seen.append(len(rs)))
    modes = [r["mode"] for r in rows]
    assert modes[:5] == ["uniform", "energy", "vbmf", "sensitivity", "sensitivity-weights"]
    assert rows[3]["fit"] == "data" and rows[4]["fit"] == "weights"
    assert seen == list(range(1, len(rows) + 1))
    for r in rows:
        assert r["params_fraction"] <= 0.5 + 1e-9, r
        assert 0 <= r["accuracy_before"] <= 1 and 0 <= r["accuracy_after"] <= 1
        assert r["accuracy_dense"] == dense and r["latency_ratio"] > 0
    assert rows[3]["predicted_drop"] is not None and rows[0]["predicted_drop"] is None
    if bench._have_tltorch() is None:
        assert modes[5:] == ["tltorch-tucker"] and rows[5]["layers_left_dense"] == []
    else:
        assert len(rows) == 4 and notes
    g = bench.goals(rows, cfg)
    best = max(r["accuracy_before"] for r in rows[:3])
    assert g["a_sensitivity_best_before"]["toy"]["passed"] == (rows[3]["accuracy_before"] >= best)
    png = bench.plot(rows, tmp_path / "toy.png")
    assert png.stat().st_size > 1000
