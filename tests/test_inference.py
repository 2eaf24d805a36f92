"""The inference form (tnconv.for_inference): exact to float rounding, plain modules, the
path asked for or measured, batch norm folded, compile- and export-ready, clear errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import tnconv
from tnconv.inference import conv_bn_pairs, fold_batchnorm, for_inference, interleaved_medians
from tnconv.inference import deployable as build_module
from tnconv.layers import CPConv2d, FactorizedConv2d, MPSConv2d, TuckerConv2d
from tnconv.layers.plain import dense_module, factored_module

pytestmark = [pytest.mark.usefixtures("one_thread"),  # tests/conftest.py
              pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")]

#: (name, conv keyword arguments): stride, padding (asymmetric by mode), dilation, groups, bias
CONVS = {
    "plain": dict(padding=1),
    "strided": dict(stride=2, padding=1, bias=False),
    "dilated": dict(padding=2, dilation=2),
    "reflect": dict(padding=(1, 2), padding_mode="reflect"),
    "same": dict(padding="same", dilation=(1, 2)),
    "grouped": dict(padding=1, groups=2),
    "rect": dict(stride=(2, 1), padding=(0, 1), kernel_size=(3, 1)),
}
#: (name, factory of a factorized layer from a conv)
LAYERS = {
    "mps-chain": lambda c: MPSConv2d.from_conv(c, cut="out|kh|kw|in", max_bond=3),
    "mps-out|in,kh,kw": lambda c: MPSConv2d.from_conv(c, cut="out|in,kh,kw", max_bond=3),
    "mps-out,kh|in,kw": lambda c: MPSConv2d.from_conv(c, cut="out,kh|in,kw", max_bond=3),
    "mps-out,kh,kw|in": lambda c: MPSConv2d.from_conv(c, cut="out,kh,kw|in", max_bond=3),
    "mps-split": lambda c: MPSConv2d.from_conv(c, split={"out": (2, 4)}, max_bond=4),
    "tucker": lambda c: TuckerConv2d.from_conv(c, ranks=(3, 2)),
    "cp": lambda c: CPConv2d.from_conv(c, rank=4, n_iter=5),
}


def _conv(name: str, seed: int = 0) -> nn.Conv2d:
    torch.manual_seed(seed)
    kw = dict(CONVS[name])
    return nn.Conv2d(4, 8, kw.pop("kernel_size", 3), **kw).eval()


def _random_bn(bn: nn.BatchNorm2d, seed: int = 1) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.weight.copy_(torch.randn(bn.num_features, generator=g))
        bn.bias.copy_(torch.randn(bn.num_features, generator=g))
    return bn


def _net(layer: nn.Module) -> nn.Sequential:
    return nn.Sequential(layer, _random_bn(nn.BatchNorm2d(8)), nn.ReLU()).eval()


X = torch.randn(3, 4, 9, 11, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("conv_name", list(CONVS))
@pytest.mark.parametrize("layer_name", list(LAYERS))
@pytest.mark.parametrize("path", ["dense", "factored"])
def test_every_layer_kind_and_cut_matches_the_eval_model(conv_name: str, layer_name: str,
                                                         path: str) -> None:
    conv = _conv(conv_name)
    try:
        layer = LAYERS[layer_name](conv).eval()
    except ValueError:  # a cut that does not fit the kernel (1-wide kh for the chain)
        pytest.skip(f"{layer_name} does not apply to {conv_name}")
    net = _net(layer)
    with torch.no_grad():
        expected = net(X)
    fast = for_inference(net, X, path=path)
    has_factored = factored_module(layer) is not None
    assert fast.inference_report.paths == {"0": path if has_factored else "dense"}
    assert fast.inference_report.folded == [("0" if not has_factored or path == "dense"
                                             else f"0.{len(fast[0]) - 1}", "1")]
    assert not any(isinstance(m, (FactorizedConv2d, nn.BatchNorm2d)) for m in fast.modules())
    with torch.no_grad():
        got = fast(X)
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) < 1e-4 * (1 + float(expected.abs().max()))


def test_mpo_layers_become_plain_conv_and_linear() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(),
                        nn.Linear(16 * 7 * 9, 16)).eval()
    small, _ = tnconv.tensorize(net, kind="mpo", layers=["0", "4"], max_bond=4, progress=False)
    with torch.no_grad():
        expected = small(X)
    fast = for_inference(small, X)
    assert [type(fast[i]).__name__ for i in (0, 1, 4)] == ["Conv2d", "Identity", "Linear"]
    assert fast.inference_report.paths == {"0": "dense", "4": "dense"}
    with torch.no_grad():
        assert torch.allclose(fast(X), expected, atol=1e-4)


def test_plain_modules_hold_no_einsum() -> None:
    layer = TuckerConv2d.from_conv(_conv("plain"), ranks=(2, 2)).eval()
    for mod in (dense_module(layer), factored_module(layer)):
        assert all(type(m).forward in (nn.Conv2d.forward, nn.Sequential.forward,
                                       nn.ZeroPad2d.forward) for m in mod.modules())
    with pytest.raises(TypeError, match="factorized convolution"):
        dense_module(nn.Conv2d(2, 2, 1))


def test_batchnorm_folding_is_exact_in_float64() -> None:
    net = nn.Sequential(nn.Conv2d(4, 8, 3, bias=False), _random_bn(nn.BatchNorm2d(8)),
                        nn.Conv2d(8, 8, 1, groups=4), _random_bn(nn.BatchNorm2d(8), 3),
                        nn.ReLU()).double().eval()
    x = X.double()
    with torch.no_grad():
        before = net(x)
        assert fold_batchnorm(net) == [("0", "1"), ("2", "3")]
        after = net(x)
    assert float((after - before).abs().max()) < 1e-12 * float(before.abs().max())
    assert isinstance(net[1], nn.Identity) and net[0].bias is not None


def test_resnet_blocks_fold_and_shared_outputs_do_not() -> None:
    pairs = conv_bn_pairs(tnconv.resnet20(10, 1))
    assert len(pairs) == 19 + 2  # every conv but none twice, the two downsample 1x1 included
    assert ("layer2.0.downsample.0", "layer2.0.downsample.1") in pairs

    class Branch(nn.Module):  # the conv's output also feeds the sum: no fold
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.bn(y) + y

    assert conv_bn_pairs(Branch()) == []


def test_untraceable_models_fold_inside_sequentials_with_a_warning() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(4, 8, 3), _random_bn(nn.BatchNorm2d(8)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x) if x.sum() > -1e9 else x  # data-dependent: fx cannot trace

    net = Branchy().eval()
    with pytest.warns(UserWarning, match="cannot trace"):
        fast = for_inference(net, X)
    assert fast.inference_report.folded == [("body.0", "body.1")]


def test_measured_path_follows_the_timings(monkeypatch: pytest.MonkeyPatch) -> None:
    net = _net(TuckerConv2d.from_conv(_conv("plain"), ranks=(2, 2)))
    # (dense, factored) samples -> the choice; ranks (2, 2) have fewer FLOPs factored
    cases = [(([2.0, 2.2], [1.0, 1.0]), "factored"), (([1.0, 1.0], [2.0, 1.9]), "dense"),
             (([1.0, 1.0], [1.05, 1.02]), "factored")]  # within the noise: by FLOPs
    for times, expected in cases:
        monkeypatch.setattr(build_module, "interleaved_samples",
                            lambda calls, times=times, **kw: times)
        report = for_inference(net, X).inference_report
        assert report.paths == {"0": expected}
        assert report.seconds["0"]["dense"] == pytest.approx(sum(times[0]) / 2)
        ratio = sorted(f / d for f, d in zip(times[1], times[0]))
        assert report.seconds["0"]["paired_ratio"] == pytest.approx(sum(ratio) / 2)


def test_flops_path_picks_fewer_multiply_adds() -> None:
    tiny = _net(TuckerConv2d.from_conv(nn.Conv2d(4, 8, 3, padding=1), ranks=(1, 1)))
    full = _net(TuckerConv2d.from_conv(nn.Conv2d(4, 8, 3, padding=1)))
    assert for_inference(tiny, X, path="flops").inference_report.paths == {"0": "factored"}
    assert for_inference(full, X, path="flops").inference_report.paths == {"0": "dense"}


def test_memory_format_is_honoured_or_measured() -> None:
    net = _net(TuckerConv2d.from_conv(_conv("plain"), ranks=(2, 2)))
    with torch.no_grad():
        expected = net(X)
    for fmt, layout in (("channels_last", torch.channels_last),
                        ("contiguous", torch.contiguous_format)):
        fast = for_inference(net, X, memory_format=fmt)
        weights = [p for p in fast.parameters() if p.dim() == 4]
        assert weights and all(p.is_contiguous(memory_format=layout) for p in weights)
        assert fast.inference_report.memory_format == fmt
        with torch.no_grad():
            assert torch.allclose(fast(X), expected, atol=1e-4)
    report = for_inference(net, X).inference_report  # "auto": both layouts timed
    assert set(report.format_seconds) == {"channels_last", "contiguous"}
    assert report.memory_format in ("channels_last", "contiguous")
    with pytest.raises(ValueError, match="unknown memory_format"):
        for_inference(net, X, memory_format="nhwc")


def test_model_is_not_modified_and_dtype_is_honoured() -> None:
    net = _net(MPSConv2d.from_conv(_conv("plain"), max_bond=2))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    fast = for_inference(net, X, dtype=torch.float64)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
    assert isinstance(net[0], MPSConv2d) and isinstance(net[1], nn.BatchNorm2d)
    assert all(p.dtype == torch.float64 for p in fast.parameters())
    assert fast.inference_report.dtype == "float64"


def test_compressed_resnet_compiles_without_graph_breaks_and_exports() -> None:
    model = tnconv.resnet20(10, 1).eval()
    small, _ = tnconv.compress(model, params=0.3, allocate="uniform", input_size=(1, 12, 12),
                               progress=False, latency=False)
    x = torch.randn(2, 1, 12, 12)
    fast = for_inference(small, x)
    with torch.no_grad():
        expected = small(x)
        compiled = torch.compile(fast, fullgraph=True, backend="eager")(x)
    assert float((compiled - expected).abs().max()) < 1e-4 * (1 + float(expected.abs().max()))
    program = torch.export.export(fast, (x,))
    assert torch.allclose(program.module()(x), compiled, atol=1e-5)


@pytest.mark.parametrize("kind", ["mps", "tucker", "cp"])
def test_training_form_compiles_with_fullgraph(kind: str) -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3))
    options = {"rank": 3, "n_iter": 3} if kind == "cp" else {}
    model, _ = tnconv.tensorize(net, kind=kind, progress=False, **options)
    x = torch.randn(2, 3, 8, 8)
    y = torch.compile(model, fullgraph=True, backend="eager")(x)  # raises on a graph break
    y.sum().backward()
    assert all(p.grad is not None for p in model[3].parameters())
    model.eval()
    with torch.no_grad():
        assert torch.allclose(torch.compile(model, fullgraph=True, backend="eager")(x),
                              model(x), atol=1e-5)


def test_bad_inputs_get_one_line_errors() -> None:
    net = _net(TuckerConv2d.from_conv(_conv("plain"), ranks=(2, 2)))
    cases = [
        (TypeError, "model must be", lambda: for_inference("net", X)),
        (TypeError, "example_input must be a torch.Tensor", lambda: for_inference(net, [1])),
        (TypeError, "floating-point", lambda: for_inference(net, X.long())),
        (ValueError, "does not fit the model", lambda: for_inference(net, X[:, :3])),
        (ValueError, "non-empty batch", lambda: for_inference(net, torch.randn(4))),
        (ValueError, "is on meta", lambda: for_inference(net, X.to("meta"))),
        (ValueError, "unknown path", lambda: for_inference(net, X, path="fastest")),
        (TypeError, "dtype must be", lambda: for_inference(net, X, dtype=torch.int8)),
    ]
    for error, match, call in cases:
        with pytest.raises(error, match=match) as info:
            call()
        assert "\n" not in str(info.value)


def test_training_mode_is_said_and_the_copy_is_eval() -> None:
    net = _net(TuckerConv2d.from_conv(_conv("plain"), ranks=(2, 2))).train()
    with pytest.warns(UserWarning, match="training mode"):
        fast = for_inference(net, X)
    assert net.training and not fast.training
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for_inference(net.eval(), X)


def test_interleaved_medians_checks_and_repeats_short_calls() -> None:
    counts = [0, 0]

    def call(k: int) -> None:
        counts[k] += 1

    t = interleaved_medians([lambda: call(0), lambda: call(1)], repeats=3, warmup=1,
                            min_sample_s=1e-3)
    assert len(t) == 2 and counts[0] == counts[1] > 4  # repeated within samples
    with pytest.raises(ValueError, match="repeats"):
        interleaved_medians([call], repeats=0)
    with pytest.raises(ValueError, match="warmup"):
        interleaved_medians([call], warmup=-1)
