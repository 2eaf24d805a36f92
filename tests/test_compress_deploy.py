"""tnconv.compress for deployment: ranks that are multiples (``rank_multiple=``), a latency
budget (``latency=0.5``) and latencies of the inference forms (``tnconv.for_inference``)."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
import torch
from torch import nn

import tnconv
import tnconv.compression.latency as latency_mod
from tnconv.cli import main
from tnconv.compression import compress
from tnconv.compression.candidates import LayerChoices, SVDFamily, TuckerFamily, dense_option
from tnconv.compression.families import CPFamily
from tnconv.layers import CPConv2d, FactorizedConv2d, MPSConv2d, TuckerConv2d

SIZE = (8, 12, 12)


def _net(seed: int = 0, widths: tuple[int, int, int] = (32, 48, 64)) -> nn.Module:
    """Every dimension a multiple of 8, so every full rank is one too (no exception)."""
    torch.manual_seed(seed)
    a, b, c = widths
    return nn.Sequential(nn.Conv2d(8, a, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(a, b, 3, padding=1), nn.ReLU(), nn.Conv2d(b, c, 1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10)).eval()


def _conv_params(model: nn.Sequential) -> int:
    return sum(p.numel() for m in model if isinstance(m, (nn.Conv2d, FactorizedConv2d))
               for p in m.parameters())


def _layer_ranks(model: nn.Module) -> list[int]:
    out: list[int] = []
    for m in model.modules():
        if isinstance(m, MPSConv2d):
            out += list(m.bond_dims)
        elif isinstance(m, TuckerConv2d):
            out += list(m.ranks)
        elif isinstance(m, CPConv2d):
            out.append(m.rank)
    return out


@contextlib.contextmanager
def _one_thread():
    """Timings on one thread: a 2-thread op on a shared 2-core machine waits for its slower
    thread, which makes single measurements jump by several times."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --- rank_multiple ------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "allocate"), [
    ("auto", "uniform"), ("auto", "vbmf"), ("tucker", "energy"), ("mps", "energy"),
    ("cp", "uniform")])
def test_every_rank_is_a_multiple_and_the_budget_holds(method, allocate):
    net = _net(widths=(16, 16, 16) if method == "cp" else (32, 48, 64))  # CP's ALS: slow
    small, report = compress(net, params=0.3, method=method, allocate=allocate,
                             rank_multiple=8, input_size=SIZE, progress=False, latency=False)
    factored = [r for r in report.layers if r.method != "dense"]
    assert factored and report.rank_multiple == 8
    assert all(r % 8 == 0 for row in factored for r in row.ranks), report.layers
    layer_ranks = _layer_ranks(small)
    assert layer_ranks and all(r % 8 == 0 for r in layer_ranks), layer_ranks
    # the budget, counted on the models themselves
    assert _conv_params(small) / _conv_params(net) == pytest.approx(report.params_fraction)
    assert report.params_fraction <= 0.3


def test_rank_multiple_with_sensitivity_and_data_fits():
    net = _net(1)
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(96, *SIZE, generator=g), torch.randint(0, 10, (96,), generator=g))
    _, report = compress(net, data, params=0.4, rank_multiple=8, cache=False, progress=False,
                         latency=False)
    assert report.fit == "data" and report.params_fraction <= 0.4
    assert all(r % 8 == 0 for row in report.layers for r in row.ranks), report.layers


def test_family_grids_and_clip_keep_to_multiples():
    g = torch.Generator().manual_seed(0)
    svd = SVDFamily(torch.randn(20, 30, 1, 1, generator=g), 0, None, "out|in,kh,kw")
    assert svd.set_multiple(8).axis_ranks(0) == [8, 16, 20]  # the full rank 20 kept
    assert [svd.clip((r,))[0] for r in (1, 7, 8, 15, 19, 20, 99)] == [8, 8, 8, 8, 16, 20, 20]
    assert svd.set_multiple(32).axis_ranks(0) == [20]  # full below the multiple: full only
    tucker = TuckerFamily(torch.randn(400, 400, 3, 3, generator=g), 0, None).set_multiple(4)
    grid = tucker.grid()
    axes = [sorted({o.ranks[k] for o in grid}) for k in (0, 1)]
    assert all(r % 4 == 0 for ax in axes for r in ax) and all(len(ax) <= 48 for ax in axes)
    assert axes[0][-1] == 400 and len(axes[0]) > 40
    cp = CPFamily(torch.randn(8, 8, 3, 3, generator=g), 0, None).set_multiple(8)
    assert cp.full == (26,) and {o.ranks[0] for o in cp.grid()} <= {8, 16, 24}  # no rank 26
    layer = LayerChoices("0", dense_option((20, 30, 1, 1), 0, None), [svd.set_multiple(8)])
    assert [o.ranks for o in layer.options("params")] == [(8,), ()]


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), (-8, ValueError),
                                              (True, TypeError), (8.0, TypeError),
                                              ("8", TypeError)])
def test_bad_rank_multiple(value, error):
    with pytest.raises(error, match="rank_multiple"):
        compress(_net(), params=0.3, allocate="energy", rank_multiple=value, input_size=SIZE,
                 progress=False, latency=False)


# --- latency budget -----------------------------------------------------------------------


def _wide(c: int = 128) -> nn.Module:
    """Convolutions take nearly all of the time: the smallest FLOPs are much faster."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(16, c, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(c, c, 3, padding=1)).eval()


def test_latency_budget_is_met_by_the_measured_inference_form():
    net = _wide()
    with _one_thread():
        small, report = compress(net, latency=0.9, allocate="energy", method="svd",
                                 cuts="out|in,kh,kw", input_size=(16, 16, 16), batch_size=8,
                                 progress=False)
    assert report.latency_budget == 0.9 and report.latency_batch == 8
    assert report.latency_ratio is not None and report.latency_ratio <= 0.9
    assert report.budget_kind == "flops" and report.budget < 1
    assert report.flops_fraction <= report.budget * (1 + 1e-9)
    search = report.latency_search
    assert len(search) >= 2 and all(t["ratio"] == t["compressed_s"] / t["dense_s"] for t in search)
    # the kept one: the largest fraction measured within the budget, its times reported
    kept = max((t for t in search if t["ratio"] <= 0.9), key=lambda t: t["fraction"])
    assert report.budget == kept["fraction"]
    assert report.latency_compressed_s == kept["compressed_s"]
    assert any(isinstance(m, FactorizedConv2d) for m in small.modules())
    assert "latency=0.9" in " ".join(report.notes) and "budget 0.9" in str(report)


def test_an_unreachable_latency_budget_is_an_error():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(8, 16, 3), nn.ReLU()).eval()
    with _one_thread(), pytest.raises(ValueError, match=r"latency=0\.001 cannot be met.*fastest"):
        compress(net, latency=0.001, allocate="energy", method="svd", input_size=(8, 8, 8),
                 batch_size=1, progress=False)


def test_the_search_keeps_the_largest_fraction_that_met_the_target(monkeypatch):
    """meet_latency with a fake clock: latency = fraction + 0.1 of dense."""
    clock = {}

    def fake(calls, **_):
        return [1.0, clock["fraction"] + 0.1]

    def make(f):
        clock["fraction"] = f
        return nn.Conv2d(2, 2, 1), f

    monkeypatch.setattr(latency_mod, "interleaved_medians", fake)
    dense = nn.Conv2d(2, 2, 1)
    (_, f), kept, trials = latency_mod.meet_latency(
        make, dense, 0.5, 0.01, input_size=(2, 4, 4), batch=2, device=torch.device("cpu"))
    assert [round(t.fraction, 4) for t in trials[:2]] == [0.5, 0.01]  # target, then cheapest
    assert f == kept.fraction and kept.ratio <= 0.5 and 0.3 < f <= 0.4
    assert kept.fraction == max(t.fraction for t in trials if t.ratio <= 0.5)
    with pytest.raises(ValueError, match="fastest compressed model tried runs at 0.110"):
        latency_mod.meet_latency(make, dense, 0.05, 0.01, input_size=(2, 4, 4), batch=2,
                                 device=torch.device("cpu"))


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"latency": 0}, ValueError, "latency=0 is not"),
    ({"latency": 1.5}, ValueError, "latency=1.5 is not"),
    ({"latency": 1}, ValueError, "latency=1 is not"),
    ({"latency": math.nan}, ValueError, "latency=nan is not"),
    ({"latency": "fast"}, TypeError, "latency must be"),
    ({"latency": None}, TypeError, "latency must be"),
    ({"latency": 0.5, "params": 0.3}, ValueError, "budget of its own"),
    ({"latency": 0.5, "input_size": None}, ValueError, "latency=0.5 needs input_size"),
    ({"batch_size": 0}, ValueError, "batch_size must be"),
    ({"batch_size": True}, TypeError, "batch_size must be"),
])
def test_bad_latency_values(kwargs, error, match):
    kw = {"allocate": "energy", "input_size": SIZE, "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        compress(_net(), **kw)


# --- what is timed ------------------------------------------------------------------------


def test_the_report_times_the_inference_forms(monkeypatch):
    seen, forms = [], []
    real = latency_mod.for_inference

    def spy(model, x, **kw):
        seen.append(model)
        forms.append(real(model, x, **kw))
        return forms[-1]

    monkeypatch.setattr(latency_mod, "for_inference", spy)
    monkeypatch.setattr(latency_mod, "interleaved_medians",
                        lambda calls, **_: [1.0 + k for k in range(len(calls))])
    net = _net()
    small, report = compress(net, params=0.3, allocate="energy", input_size=SIZE,
                             batch_size=4, progress=False)
    assert seen[0] is net and seen[1] is small and len(seen) == 2
    assert any(isinstance(m, FactorizedConv2d) for m in small.modules())
    assert not any(isinstance(m, FactorizedConv2d) for f in forms for m in f.modules())
    assert (report.latency_dense_s, report.latency_compressed_s) == (1.0, 2.0)
    assert report.latency_batch == 4 and "inference forms, batch 4" in str(report)


def test_the_sensitivity_candidates_are_timed_as_inference_forms(monkeypatch):
    paths = []
    real = latency_mod.for_inference
    monkeypatch.setattr(latency_mod, "for_inference",
                        lambda m, x, **kw: paths.append(kw.get("path")) or real(m, x, **kw))
    net = nn.Sequential(nn.Conv2d(4, 8, 3))
    lc = LayerChoices("0", dense_option((8, 4, 3, 3), 8, None),
                      [SVDFamily(net[0].weight, 8, None, "out|in,kh,kw")])
    time_all = latency_mod.allocation_timer(net, [lc], (4, 10, 10), torch.device("cpu"),
                                            batch=2, repeats=1)
    times = time_all([[lc.dense], [lc.families[0].option((2,))]])
    assert len(times) == 2 and paths == ["flops", "flops"]


def test_the_timers_check_their_sizes():
    net = nn.Conv2d(1, 2, 3)
    with pytest.raises(ValueError, match="batch must be"):
        latency_mod.measure_latencies([net], (1, 8, 8), batch=0)
    with pytest.raises(TypeError, match="input_size must be"):
        latency_mod.inference_forms([net], None)
    with pytest.raises(ValueError, match="rank multiple must be"):
        SVDFamily(torch.randn(4, 4, 1, 1), 0, None, "out|in,kh,kw").set_multiple(0)


# --- command line -------------------------------------------------------------------------


def test_cli_rank_multiple_and_latency(tmp_path, capsys):
    from tnconv.cli import build_parser

    args = build_parser().parse_args(["compress", "m.pt", "--latency", "0.5", "--batch-size",
                                      "64", "--rank-multiple", "8", "--out", "s.pt"])
    assert (args.latency, args.batch_size, args.rank_multiple) == (0.5, 64, 8)
    path = tnconv.save_checkpoint(tnconv.cnn4(10, 1), tmp_path / "m.pt", meta={"model": "cnn4"})
    out = tmp_path / "small.pt"
    assert main(["compress", str(path), "--max-error", "0.5", "--allocate", "energy",
                 "--method", "svd", "--cuts", "out|in,kh,kw", "--rank-multiple", "8",
                 "--out", str(out),
                 "--no-progress", "--no-latency"]) == 0
    report = json.loads(out.with_suffix(".pt.json").read_text())
    assert report["rank_multiple"] == 8
    ranks = [r for row in report["layers"] for r in row["ranks"]]
    assert ranks and all(r % 8 == 0 for r in ranks)
    capsys.readouterr()
    assert main(["compress", str(path), "--latency", "0.5", "--no-latency", "--allocate",
                 "energy", "--out", str(out), "--no-progress"]) == 2
    assert "--no-latency" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--rank-multiple", "0"], ["--rank-multiple", "x"],
                                  ["--latency", "1.5"], ["--latency", "0"],
                                  ["--latency", "0.5", "--params", "0.3"],
                                  ["--batch-size", "0"]])
def test_cli_bad_values_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(["compress", "m.pt", "--out", "s.pt", *argv])
    assert info.value.code == 2 and "error" in capsys.readouterr().err
