"""The parts of tnconv.compress, one module at a time: allocate.py, choose.py, sensitivity.py and
the registries of the named choices (methods, allocations, fits)."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

import tnconv
from tnconv.cli import build_parser
from tnconv.compression import ALLOCATIONS, FITS, METHODS
from tnconv.compression.allocate import (
    allocate_energy,
    allocate_max_error,
    allocate_min_loss,
    allocate_uniform,
    allocate_vbmf,
    fill_budget,
    total_cost,
)
from tnconv.compression.candidates import (
    LayerChoices,
    Method,
    dense_option,
    layer_families,
    swap_layer,
)
from tnconv.compression.choose import (
    LATENCY_TOLERANCE,
    Allocation,
    Candidate,
    choose_sensitivity,
    pick_candidate,
)
from tnconv.compression.datafit import Fit, with_data_families
from tnconv.compression.sensitivity import DropCurve, Evaluator, option_id, probe_curves
from tnconv.registry import UnknownNameError

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def _layer(name: str, shape: tuple[int, int, int, int], seed: int, method: str = "svd"
           ) -> LayerChoices:
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return LayerChoices(name, dense_option(shape, 0, None),
                        layer_families(w, 0, None, method=method))


def _three_layers() -> list[LayerChoices]:
    return [_layer("a", (16, 12, 1, 1), 0), _layer("b", (24, 20, 1, 1), 1),
            _layer("c", (32, 8, 3, 3), 2, method="auto")]


def _dense_total(layers) -> float:
    return sum(lc.dense.params for lc in layers)


# --- allocate.py ---------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.2, 0.5])
@pytest.mark.parametrize("allocate", [allocate_uniform, allocate_energy, allocate_vbmf])
def test_allocations_meet_the_budget_and_fill_it(allocate, fraction):
    layers = _three_layers()
    budget = fraction * _dense_total(layers)
    chosen = allocate(layers, budget, "params")
    assert len(chosen) == len(layers)
    for lc, o in zip(layers, chosen):
        assert o in lc.options("params"), (lc.name, o)
    spent = sum(o.params for o in chosen)  # counted here, not by total_cost
    assert spent == total_cost(chosen, "params")
    assert 0.9 * budget <= spent <= budget
    # filled: no factored layer can move to a more accurate option within the budget
    if spent < 0.98 * budget:
        for lc, cur in zip(layers, chosen):
            if cur.method != "dense":
                assert all(spent - cur.params + o.params > budget
                           for o in lc.options("params") if o.error < cur.error), lc.name


def test_uniform_gives_identical_layers_identical_ranks():
    layers = [_layer("a", (20, 20, 1, 1), 3), _layer("b", (20, 20, 1, 1), 3)]
    chosen = allocate_uniform(layers, 0.4 * _dense_total(layers), "params")
    assert chosen[0].ranks == chosen[1].ranks == (4,)  # 4 * 40 = 160 = 0.4 * 400


def test_fill_budget_raises_the_most_useful_layer_first():
    layers = [_layer("a", (16, 12, 1, 1), 0), _layer("b", (24, 20, 1, 1), 1)]
    start = [lc.families[0].option((1,)) for lc in layers]
    budget = total_cost(start, "params") + 28  # room for one more rank of "a" (16 + 12)
    out = fill_budget(layers, start, budget, "params")
    assert [o.ranks for o in out] == [(2,), (1,)]
    assert fill_budget(layers, start, total_cost(start, "params"), "params") == start


def test_max_error_takes_each_layers_cheapest_option_within_the_error():
    layers = _three_layers()
    for lc, o in zip(layers, allocate_max_error(layers, 0.5, "params")):
        ok = [p for p in lc.options("params") if p.error <= 0.5 * (1 + 1e-12)]
        assert o.error <= 0.5 * (1 + 1e-12)
        assert o.params == min(p.params for p in ok)


def _tiny_knapsack() -> list[LayerChoices]:
    # ranks 1..3 and dense per layer: 4 x 4 x 4 combinations, integer costs
    return [_layer("a", (6, 10, 1, 1), 4), _layer("b", (8, 6, 1, 1), 5),
            _layer("c", (5, 9, 1, 1), 6)]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("budget", [60, 100, 130])
def test_min_loss_matches_brute_force(seed, budget):
    layers = _tiny_knapsack()
    gen = torch.Generator().manual_seed(seed)
    table = {(i, o.ranks): (0.0 if o.method == "dense" else float(torch.rand((), generator=gen)))
             for i, lc in enumerate(layers) for o in lc.options("params")}

    def loss(i, o):
        return table[(i, o.ranks)]

    grids = [lc.options("params") for lc in layers]
    assert [len(g) for g in grids] == [4, 4, 4]
    feasible = [c for c in itertools.product(*grids) if sum(o.params for o in c) <= budget]
    best = min(sum(loss(i, o) for i, o in enumerate(c)) for c in feasible)
    # bins = budget: one unit per parameter, so rounding costs up changes nothing
    got = allocate_min_loss(layers, budget, "params", loss, bins=budget)
    assert sum(o.params for o in got) <= budget
    assert sum(loss(i, o) for i, o in enumerate(got)) == pytest.approx(best, abs=1e-5)


def test_min_loss_without_a_feasible_choice_is_an_error():
    layers = _tiny_knapsack()
    with pytest.raises(ValueError, match="no choice"):
        allocate_min_loss(layers, 30, "params", lambda i, o: o.error, bins=30)  # 16+14+14 > 30


# --- the registries ------------------------------------------------------------------------


def test_registries_keep_their_names_in_order():
    assert list(METHODS) == ["auto", "svd", "tucker", "mps", "cp"]
    assert list(ALLOCATIONS) == ["uniform", "energy", "vbmf", "sensitivity"]
    assert list(FITS) == ["auto", "weights", "data"]
    for registry, kind in ((METHODS, Method), (ALLOCATIONS, Allocation), (FITS, Fit)):
        assert all(isinstance(e, kind) and e.description for e in registry.values())
    assert ALLOCATIONS["Energy"] is ALLOCATIONS["energy"]
    assert [n for n, a in ALLOCATIONS.items() if a.needs_data] == ["sensitivity"]
    assert FITS["data"].families is with_data_families and FITS["weights"].families is None


@pytest.mark.parametrize("registry, bad", [(METHODS, "qr"), (ALLOCATIONS, "greedy"),
                                           (FITS, "best")])
def test_unknown_names_list_the_valid_ones(registry, bad):
    with pytest.raises(UnknownNameError) as info:
        registry[bad]
    message = str(info.value)
    assert repr(bad) in message and all(name in message for name in registry)
    assert isinstance(info.value, ValueError) and bad not in registry


@pytest.mark.parametrize("name", ["uniform", "energy", "vbmf"])
def test_allocation_entries_run_their_function(name):
    layers = _three_layers()
    budget = 0.3 * _dense_total(layers)
    direct = {"uniform": allocate_uniform, "energy": allocate_energy, "vbmf": allocate_vbmf}
    options, drops, fields = ALLOCATIONS[name].run(layers, budget, "params", model=None)
    assert options == direct[name](layers, budget, "params")
    assert drops is None and fields == {}


@pytest.mark.parametrize("method, keys", [
    ("svd", ["svd out|in,kh,kw", "svd out,kh,kw|in", "svd out,kh|in,kw", "svd out,kw|in,kh"]),
    ("tucker", ["tucker"]), ("mps", ["mps"]), ("cp", ["cp"]),
    ("auto", ["svd out|in,kh,kw", "svd out,kh,kw|in", "svd out,kh|in,kw", "svd out,kw|in,kh",
              "tucker", "mps"]),
])
def test_methods_build_their_families(method, keys):
    w = torch.randn(6, 4, 3, 3)
    assert [f.key for f in layer_families(w, 0, None, method=method)] == keys
    pointwise = torch.randn(6, 4, 1, 1)
    assert [f.key for f in layer_families(pointwise, 0, None, method=method)] == [
        "svd out|in,kh,kw"]


def test_the_cli_offers_every_registered_name():
    parser = build_parser()
    for flag, registry in (("--method", METHODS), ("--allocate", ALLOCATIONS), ("--fit", FITS)):
        for name in registry:
            args = parser.parse_args(["compress", "m.pt", "--out", "s.pt", flag, name])
            assert getattr(args, flag[2:]) == name


# --- choose.py -----------------------------------------------------------------------------


def test_pick_candidate_prefers_the_fastest_accurate_enough():
    tol = LATENCY_TOLERANCE
    best = Candidate("knapsack", [], 0.90, 0.30, 2.0)
    close = Candidate("knapsack+flops0.01", [], 0.90 - tol / 2, 0.30, 1.0)
    far = Candidate("knapsack separable", [], 0.90 - 2 * tol, 0.30, 0.1)
    low = Candidate("vbmf", [], 0.80, 0.50, 0.05)
    assert pick_candidate([best, close, far, low]).label == "knapsack+flops0.01"
    assert pick_candidate([best, close, far]).label == "knapsack+flops0.01"  # no plain one
    # never below a plain allocation, even when faster and within the tolerance
    plain = Candidate("uniform", [], 0.90 - tol / 4, 0.40, 3.0)
    assert pick_candidate([best, close, far, plain]).label == "knapsack"
    # one untimed candidate in the pool: the most accurate
    assert pick_candidate([best, Candidate("energy", [], 0.90 - tol / 2, 0.3, None)]) is best


def _tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(12, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(16 * 8 * 8, 5)).eval()


def _tiny_data(model: nn.Module, n: int = 64):
    """Random images labelled by the model itself: the dense accuracy is 1 and each change of
    a layer costs some (an untrained model's drops would all tie)."""
    x = torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return x, model(x).argmax(1)


def _tiny_layers(model: nn.Module) -> list[LayerChoices]:
    out = []
    for name in ("0", "2"):
        conv = model.get_submodule(name)
        shape = tuple(conv.weight.shape)
        out.append(LayerChoices(name, dense_option(shape, shape[0], None),
                                layer_families(conv.weight.detach(), shape[0], None,
                                               method="svd")))
    return out


def _with(model: nn.Module, layers, options) -> nn.Module:
    out = copy.deepcopy(model)
    for lc, o in zip(layers, options):
        out = swap_layer(out, lc.name, o)[0]
    return out


@pytest.mark.parametrize("fit", ["weights", "data"])
def test_choose_sensitivity_keeps_the_best_measured_candidate(fit, monkeypatch):
    model = _tiny_model()
    data = _tiny_data(model)
    layers = _tiny_layers(model)
    budget = 0.3 * _dense_total(layers)
    import tnconv.compression.choose as choose

    calls, seen = [], {}
    real = choose.output_moments
    monkeypatch.setattr(choose, "output_moments", lambda *a, **k: calls.append(1) or real(*a, **k))

    def time_all(allocations):  # later allocations faster; remember what was timed
        times = [float(len(allocations) - k) for k in range(len(allocations))]
        seen.update({tuple(map(id, opts)): t for opts, t in zip(allocations, times)})
        return times

    options, drops, cands, (acc0, loss0) = choose_sensitivity(
        model, data, layers, budget, "params", device=CPU, cache=False, progress=False,
        time_all=time_all, fit=fit)
    assert len(calls) == (fit == "data")  # the data fit's moments only when asked for
    assert total_cost(options, "params") <= budget and options == cands[0].options
    assert {"uniform", "energy", "vbmf"} <= {c.label for c in cands}
    for c in cands:  # each candidate got the time of its own options
        assert c.latency_s == seen[tuple(map(id, c.options))]
    assert len({c.latency_s for c in cands}) > 1 and len({c.accuracy for c in cands}) > 1
    # the kept one: the fastest within the tolerance of the best, never below the plain ones
    top = max(c.accuracy for c in cands)
    floor = max(c.accuracy for c in cands if c.label in ("uniform", "energy", "vbmf"))
    pool = [c for c in cands if c.accuracy >= max(top - LATENCY_TOLERANCE, floor) - 1e-12]
    assert cands[0].latency_s == min(c.latency_s for c in pool)
    # its accuracy is the one of the model it makes (evaluated independently)
    measured = tnconv.evaluate(_with(model, layers, options), data, device="cpu")
    assert cands[0].accuracy == pytest.approx(measured["accuracy"], abs=1.5 / len(data[1]))
    dense = tnconv.evaluate(model, data, device="cpu")
    assert (acc0, loss0) == pytest.approx((dense["accuracy"], dense["loss"]), abs=1e-5)
    assert len(drops) == len(layers)


# --- sensitivity.py ------------------------------------------------------------------------


def test_probes_measure_one_layer_changed_and_dense_drops_nothing():
    model = _tiny_model()
    data = _tiny_data(model)
    layers = _tiny_layers(model)
    fam = layers[1].families[0]  # svd out|in,kh,kw of the second conv
    exact, rough = fam.option(fam.full), fam.option((1,))
    ev = Evaluator(model, data, device=CPU, cache=False)
    measured = ev.probes({"2": [exact, rough]}, progress=False)
    acc0, loss0 = ev.baseline
    # the full rank is the dense layer: no drop
    assert measured[option_id("2", exact)] == pytest.approx((acc0, loss0), abs=1e-5)
    assert ev.allocation(["0", "2"], [lc.dense for lc in layers]) == (acc0, loss0)
    curves = probe_curves({"2": [exact, rough]}, measured, (acc0, loss0))
    assert curves[("2", fam.key)](0.0) == 0.0
    # rank 1 changes the model: the same as evaluating the factored model itself
    acc, loss = measured[option_id("2", rough)]
    want = tnconv.evaluate(_with(model, layers, [layers[0].dense, rough]), data, device="cpu")
    assert abs(loss - loss0) > 1e-3
    assert (acc, loss) == pytest.approx((want["accuracy"], want["loss"]), abs=1e-4)


def test_probes_are_cached_and_read_back(tnconv_cache, monkeypatch):
    model = _tiny_model()
    data = _tiny_data(model)
    layers = _tiny_layers(model)
    plan = {lc.name: [lc.families[0].option((1,)), lc.families[0].option((2,))] for lc in layers}
    first = Evaluator(model, data, device=CPU, cache=True)
    measured = first.probes(plan, progress=False)
    assert first.path is not None and first.path.is_file()
    assert first.path.parent == tnconv_cache / "compress"
    from tnconv.evaluation import prefix

    monkeypatch.setattr(prefix.PrefixRunner, "__init__",
                        lambda *a, **k: pytest.fail("evaluated again"))
    again = Evaluator(model, data, device=CPU, cache=True)
    assert again.probes(plan, progress=False) == measured
    assert again.baseline == first.baseline
    # another model's weights: another file, nothing reused
    other = Evaluator(_tiny_model(seed=1), data, device=CPU, cache=True)
    assert other.path != first.path and not other.store["probes"]
    assert Evaluator(model, data, device=CPU, cache=False).path is None


def test_drop_curve_is_clipped_and_non_decreasing():
    curve = DropCurve([0.2, 0.4, 0.6], [-0.1, 0.3, 0.1], baseline=0.8)
    values = [curve(e / 10) for e in range(11)]
    assert values[0] == 0.0 and min(values) >= 0.0
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert curve(0.6) == pytest.approx(0.3) and curve(1.0) == pytest.approx(0.8)
