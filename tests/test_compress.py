"""tnconv.compression.compress: budgets, allocation modes, exactness, round trips, bad input."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch
from torch import nn

import tnconv
from tnconv.compression import CompressReport, compress, load_compressed, save_compressed
from tnconv.layers import FactorizedConv2d, factorized_specs

SIZE = (1, 32, 32)


def _net(seed: int = 0, widths=(16, 32, 64, 64)) -> nn.Module:
    torch.manual_seed(seed)
    return tnconv.cnn4(10, 1, widths=widths).eval()


def _conv_params(model: nn.Module, names) -> int:
    return sum(p.numel() for n in names for p in model.get_submodule(n).parameters())


def _run(model, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("latency", False)
    kw.setdefault("input_size", SIZE)
    return compress(model, **kw)


@pytest.mark.parametrize("budget", [0.3, 0.1])
@pytest.mark.parametrize("allocate", ["uniform", "energy", "vbmf"])
@pytest.mark.parametrize("method", ["auto", "svd", "tucker"])
def test_params_budget_is_met_within_two_percent(allocate, method, budget):
    net = _net()
    names = [n for n, _ in tnconv.conv_layers(net)]
    small, report = _run(net, params=budget, allocate=allocate, method=method)
    # counted independently on the model itself
    achieved = _conv_params(small, names) / _conv_params(net, names)
    assert achieved == pytest.approx(report.params_fraction)
    assert budget * 0.98 <= achieved <= budget
    assert any(isinstance(m, FactorizedConv2d) for m in small.modules())
    # smaller state dict, not a dense truncated copy
    assert (sum(t.numel() for t in small.state_dict().values())
            < sum(t.numel() for t in net.state_dict().values()))


def test_flops_budget_and_max_error():
    net = _net()
    small, report = _run(net, flops=0.4, allocate="energy")
    assert report.flops_fraction is not None and report.flops_fraction <= 0.4 * 1.02
    assert report.flops_fraction >= 0.4 * 0.9
    small, report = _run(net, max_error=0.3, method="svd")
    dense = tnconv.densify(small)
    for (name, conv), (_, back) in zip(tnconv.conv_layers(net), tnconv.conv_layers(dense)):
        w, v = conv.weight.detach().double(), back.weight.detach().double()
        err = float((w - v).norm() / w.norm())
        assert err <= 0.3 + 1e-5, name
        if isinstance(small.get_submodule(name), FactorizedConv2d):
            assert report.layers[[r.name for r in report.layers].index(name)].rel_error == (
                pytest.approx(err, abs=1e-4))


@pytest.mark.parametrize("method", ["svd", "tucker", "mps", "cp"])
def test_factored_output_equals_densified_and_input_unchanged(method):
    net = _net(1, widths=(4, 4, 8, 8) if method == "cp" else (8, 8, 16, 16))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    small, report = _run(net, params=0.5, allocate="uniform", method=method)
    assert {k: v for k, v in net.state_dict().items()}.keys() == before.keys()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())
    assert all(type(m) is not FactorizedConv2d and not isinstance(m, FactorizedConv2d)
               for m in net.modules())
    x = torch.randn(4, *SIZE)
    with torch.no_grad():
        assert torch.allclose(small(x), tnconv.densify(small)(x), atol=1e-4, rtol=1e-4)
    kinds = {r.method for r in report.layers} - {"dense"}
    assert kinds == {method}


def test_report_outputs(tmp_path):
    net = _net(0, widths=(8, 8, 16, 16))
    data = (torch.randn(64, *SIZE), torch.randint(0, 10, (64,)))
    small, report = compress(net, data, params=0.4, allocate="energy", progress=False)
    assert isinstance(report, CompressReport)
    assert report.input_size == SIZE
    assert report.accuracy_dense is not None and report.accuracy_compressed is not None
    assert report.latency_dense_s > 0 and report.latency_compressed_s > 0
    table = report.to_pandas()
    assert list(table["name"]) == [n for n, _ in tnconv.conv_layers(net)]
    d = report.to_dict()
    assert d["params_fraction"] == pytest.approx(report.params_fraction)
    path = report.save_json(tmp_path / "r.json")
    assert path.read_text().startswith("{")
    assert "block4.conv" in str(report) and "latency" in str(report)


def test_checkpoint_round_trip(tmp_path):
    net = tnconv.cnn4(10, 1).eval()
    small, report = _run(net, params=0.3, allocate="energy", method="auto")
    x = torch.randn(3, *SIZE)
    with torch.no_grad():
        want = small.eval()(x)
    path = save_compressed(small, tmp_path / "small.pt", meta={"model": "cnn4"}, report=report)
    loaded, meta, back = load_compressed(path)
    assert meta["in_channels"] == 1
    assert factorized_specs(loaded) == factorized_specs(small)
    assert [(r.name, r.ranks, r.params_after) for r in back.layers] == [
        (r.name, r.ranks, r.params_after) for r in report.layers]
    with torch.no_grad():
        assert torch.allclose(loaded(x), want, atol=1e-5)
    # the plain checkpoint functions give the same model
    tnconv.save_checkpoint(small, tmp_path / "plain.pt", meta={"model": "cnn4"})
    plain, _ = tnconv.load_checkpoint(tmp_path / "plain.pt")
    assert sum(p.numel() for p in plain.parameters()) == sum(
        p.numel() for p in small.parameters())
    with torch.no_grad():
        assert torch.allclose(plain(x), want, atol=1e-5)


def test_old_reports_load_and_sizes_share_one_vocabulary(tmp_path):
    """A report saved before ``compression_ratio`` existed (and with keys this version does not
    know) loads; the totals are after / before (fractions) and before / after (the ratio)."""
    small, report = _run(tnconv.cnn4(10, 1).eval(), params=0.4, allocate="energy")
    d = report.to_dict()
    assert d["compression_ratio"] == pytest.approx(1 / d["params_fraction"])
    assert report.compression_ratio == pytest.approx(report.params_before / report.params_after)
    old = {k: v for k, v in d.items() if k != "compression_ratio"}
    old["layers"] = [{**r, "some_future_field": 1} for r in old["layers"]]
    old["another_future_total"] = 0.5
    path = tnconv.save_checkpoint(small, tmp_path / "old.pt",
                                  meta={"model": "cnn4", "compress_report": old})
    _, _, back = load_compressed(path)
    assert [(r.name, r.ranks, r.params_after) for r in back.layers] == [
        (r.name, r.ranks, r.params_after) for r in report.layers]
    assert back.compression_ratio == pytest.approx(report.compression_ratio)


def test_a_model_that_is_one_conv_is_replaced():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3)
    small, report = _run(conv, params=0.5, allocate="energy", input_size=(8, 10, 10))
    assert isinstance(small, FactorizedConv2d) and [r.name for r in report.layers] == [""]
    assert sum(p.numel() for p in small.parameters()) == report.params_after
    x = torch.randn(2, 8, 10, 10)
    with torch.no_grad():
        assert torch.allclose(small(x), tnconv.densify(small)(x), atol=1e-5)


@pytest.fixture(scope="module")
def trained(fmnist_train):
    net = _net(0, widths=(8, 16, 32, 32))
    tnconv.fit(net, fmnist_train, epochs=2, batch_size=128, progress=False, augment=False)
    return net.eval()


def test_sensitivity_not_worse_than_uniform(trained, fmnist_test, tnconv_cache, monkeypatch):
    sweep_data, held_out = fmnist_test.subset(400, seed=1), fmnist_test.subset(1000, seed=2)
    kw = dict(params=0.15, progress=False, latency=False)
    sens, rs = compress(trained, sweep_data, allocate="sensitivity", **kw)
    uni, ru = compress(trained, sweep_data, allocate="uniform", **kw)
    # measured on the sweep data: the kept allocation is never below uniform, energy, vbmf
    measured = {c["label"]: c["accuracy"] for c in rs.candidates}
    assert rs.candidates[0]["accuracy"] >= max(measured[k] for k in ("uniform", "energy", "vbmf"))
    assert rs.predicted_drop <= rs.uniform_predicted_drop + 1e-12
    assert rs.params_fraction <= 0.15 * 1.02
    # the kept accuracy is the one of the model returned (independent evaluation)
    assert tnconv.evaluate(sens, sweep_data)["accuracy"] == pytest.approx(
        rs.candidates[0]["accuracy"], abs=5e-3)
    acc = {k: tnconv.evaluate(m, held_out)["accuracy"] for k, m in (("s", sens), ("u", uni))}
    # measured on other images: a 1000-image binomial std is about 1.5 %
    assert acc["s"] >= acc["u"] - 0.03, acc
    # fit="auto" is "data" here: the report says which layers are fitted to their outputs
    assert rs.fit == "data" and ru.fit == "weights"
    dense = tnconv.densify(sens)
    for r in rs.layers:
        assert (r.response_error is not None) == (r.fit == "data" and r.method != "dense")
        if r.method != "dense":  # the kernel error, measured independently
            w = trained.get_submodule(r.name).weight.detach().double()
            v = dense.get_submodule(r.name).weight.detach().double()
            assert r.rel_error == pytest.approx(float((w - v).norm() / w.norm()), abs=1e-4)
    _, rw = compress(trained, sweep_data, allocate="sensitivity", fit="weights", **kw)
    assert rw.fit == "weights" and all(r.fit == "weights" for r in rw.layers)
    assert rw.params_fraction <= 0.15 * 1.02
    # offering the data fits never loses accuracy on the sweep data (weights' knapsacks kept)
    assert rs.candidates[0]["accuracy"] >= rw.candidates[0]["accuracy"]
    # cached: a rerun evaluates nothing
    from tnconv.evaluation import prefix

    monkeypatch.setattr(prefix.PrefixRunner, "__init__",
                        lambda *a, **k: pytest.fail("evaluated again"))
    monkeypatch.setattr("tnconv.compression.choose.output_moments",
                        lambda *a, **k: pytest.fail("output moments measured again"))
    again, r2 = compress(trained, sweep_data, allocate="sensitivity", **kw)
    assert [r.ranks for r in r2.layers] == [r.ranks for r in rs.layers]
    assert list((tnconv_cache / "compress").glob("sensitivity-*.json"))


def test_sensitivity_meets_the_budget_on_an_untrained_model(fmnist_test, tnconv_cache):
    """Every drop ties at chance: a FLOPs-penalised knapsack would stop far below the budget."""
    data = fmnist_test.subset(200, seed=3)
    for budget in (0.5, 0.25):
        _, rep = compress(_net(2), data, params=budget, allocate="sensitivity", progress=False,
                          latency=False)  # the report's timing is tested elsewhere
        assert 0.98 * budget <= rep.params_fraction <= budget, (budget, rep.params_fraction)


def test_data_fitted_layers_keep_their_response(trained, fmnist_test, tnconv_cache):
    """With only the cut out|in,kh,kw, the data fits win on a trained model, and each one's
    reported response error is the one measured on the layer's own inputs."""
    sweep_data = fmnist_test.subset(400, seed=1)
    small, rep = compress(trained, sweep_data, allocate="sensitivity", method="svd",
                          cuts="out|in,kh,kw", params=0.3, progress=False, latency=False)
    fitted = [r for r in rep.layers if r.fit == "data" and r.method == "svd"]
    assert fitted, [(r.name, r.fit) for r in rep.layers]
    inputs: dict[str, torch.Tensor] = {}
    hooks = [trained.get_submodule(r.name).register_forward_pre_hook(
        lambda m, a, n=r.name: inputs.__setitem__(n, a[0])) for r in fitted]
    x = torch.cat([b[0] for b in tnconv.data.batches(sweep_data, 400)])
    with torch.no_grad():
        trained(x)
        for h in hooks:
            h.remove()
        for r in fitted:
            conv, new = trained.get_submodule(r.name), small.get_submodule(r.name)
            y, y2 = conv(inputs[r.name]).double(), new(inputs[r.name]).double()
            assert float((y - y2).norm() / y.norm()) == pytest.approx(r.response_error,
                                                                      abs=1e-3), r.name
            assert r.response_error < r.rel_error  # fitted to the outputs, not the kernel


def test_finetune_keeps_the_factored_structure(fmnist_train):
    net = _net(0, widths=(8, 8, 16, 16))
    data = fmnist_train.subset(512, seed=0)
    with pytest.warns(UserWarning, match="fine-tuning on data"):
        small, report = compress(net, data, params=0.5, allocate="energy", epochs=1,
                                 finetune={"batch_size": 32}, progress=False, latency=False)
    assert report.accuracy_finetuned is not None and report.notes
    assert sum(isinstance(m, FactorizedConv2d) for m in small.modules()) >= 1


@pytest.mark.parametrize("kwargs, error, match", [
    ({"params": 0.0}, ValueError, "params"),
    ({"params": 1.5}, ValueError, "params"),
    ({"flops": -0.1}, ValueError, "flops"),
    ({"max_error": 1.0}, ValueError, "max_error"),
    ({"params": 0.5, "flops": 0.5}, ValueError, "one budget"),
    ({"params": 1e-4, "allocate": "energy"}, ValueError, "cannot be met"),
    ({"params": 0.5}, ValueError, "needs data"),
    ({"params": 0.5, "allocate": "energy", "layers": "nope*"}, ValueError, "matches no"),
    ({"params": 0.5, "method": "qr"}, ValueError, "auto, svd, tucker"),
    ({"params": 0.5, "allocate": "greedy"}, ValueError, "uniform, energy, vbmf"),
    ({"params": 0.5, "allocate": "energy", "cuts": "out|nope"}, ValueError, "nope"),
    ({"params": 0.5, "allocate": "energy", "epochs": -1}, ValueError, "epochs"),
    ({"params": 0.5, "allocate": "energy", "fit": "best"}, ValueError, "unknown fit"),
    ({"params": 0.5, "allocate": "energy", "fit": "data"}, ValueError, "fit='data'"),
    ({"max_error": 0.1, "fit": "data"}, ValueError, "fit='data'"),
])
def test_bad_inputs(kwargs, error, match):
    with pytest.raises(error, match=match):
        compress(_net(), progress=False, latency=False, input_size=SIZE, **kwargs)


def test_bad_models_and_flops_without_size():
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        compress(nn.Sequential(nn.Linear(4, 2)), params=0.5, allocate="energy")
    with pytest.raises(TypeError):
        compress("cnn4", params=0.5, allocate="energy")
    with pytest.raises(ValueError, match="input_size"):
        compress(_net(), flops=0.5, allocate="energy", progress=False)


@pytest.mark.parametrize("name", ["api", "families", "candidates", "allocate", "sensitivity",
                                  "choose", "latency", "summary", "storage", "datafit"])
def test_docstring_examples(name):
    module = importlib.import_module(f"tnconv.compression.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
