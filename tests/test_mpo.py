"""Matrix product operators: to_mpo / KernelMPO, MPOConv2d and MPOLinear, their cotengra paths,
and MPO layers through tensorize / densify / checkpoints."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tnconv
from tnconv.hyper_contraction import clear_path_cache, hyper_path, path_cache_info
from tnconv.layers import MPOConv2d, MPOLinear, densify, factorized_specs, refactorize
from tnconv.runtime import cache_dir

pytestmark = pytest.mark.usefixtures("one_thread", "tnconv_cache")

D = torch.float64


def _chain(shapes: list[tuple[int, ...]], seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=D) for s in shapes]


# ------------------------------------------------------------------ the decomposition


def test_exact_low_bond_operator_is_recovered_exactly():
    """A Linear weight built from cores of bonds (3, 2) and a conv kernel with a spatial core
    of bond 2: the untruncated MPO has exactly those bonds and gives the weight back."""
    a, b, c = _chain([(4, 2, 3), (3, 2, 4, 2), (2, 8, 2)], 0)  # (out_k, in_k) = (4,2) (2,4) (8,2)
    w = torch.einsum("oia,apjb,bqk->opqijk", a, b, c).reshape(64, 16)
    mpo = tnconv.to_mpo(w, in_shape=(2, 4, 2), out_shape=(4, 2, 8))
    assert mpo.bond_dims == [3, 2] and mpo.full_bond_dims == [8, 16]
    assert mpo.rel_error < 1e-13
    torch.testing.assert_close(mpo.to_kernel(), w, rtol=0, atol=1e-12)
    s, x, y = _chain([(3, 3, 2), (2, 4, 4, 3), (3, 4, 2)], 1)
    k = torch.einsum("hwa,aoib,bpj->opijhw", s, x, y).reshape(16, 8, 3, 3)
    mpo = tnconv.to_mpo(k, in_shape=(4, 2), out_shape=(4, 4))
    assert mpo.spatial and mpo.cut == "kh,kw|out0,in0|out1,in1"
    assert mpo.bond_dims == [2, 3] and mpo.rel_error < 1e-13
    assert [tuple(t.shape) for t in mpo.cores] == [(3, 3, 2), (2, 4, 4, 3), (3, 4, 2)]
    torch.testing.assert_close(mpo.to_kernel(), k, rtol=0, atol=1e-12)
    assert sum(int((sv > 1e-10 * sv[0]).sum()) for sv in mpo.bond_spectra) == 5


def test_bond_spectra_are_the_pair_bipartitions():
    w = torch.randn(32, 24, dtype=D)
    mpo = tnconv.to_mpo(w, in_shape=(4, 6), out_shape=(8, 4), max_bond=3)
    ref = np.linalg.svd(w.reshape(8, 4, 4, 6).permute(0, 2, 1, 3).reshape(32, 24).numpy(),
                        compute_uv=False)
    np.testing.assert_allclose(mpo.bond_spectra[0].numpy(), ref, rtol=1e-10, atol=1e-12)
    s2 = torch.tensor(ref) ** 2
    p = s2 / s2.sum()
    assert mpo.bond_entropies()[0] == pytest.approx(float(-(p * p.log2()).sum()), rel=1e-9)
    # an orthogonal projection: the error is the discarded weight of the one bond
    assert mpo.rel_error == pytest.approx(math.sqrt(float(s2[3:].sum() / s2.sum())), rel=1e-9)


@pytest.mark.parametrize("shape, ins, outs", [
    ((4096, 4096), (8, 8, 8, 8), (8, 8, 8, 8)), ((10, 256), (8, 8, 4), (5, 2, 1)),
    ((64, 3, 3, 3), (3, 1), (8, 8)), ((16, 8, 1, 1), (4, 2), (4, 4)),
])
def test_automatic_shapes_are_balanced(shape, ins, outs):
    assert tnconv.mps.mpo_shapes(shape[1], shape[0]) == (ins, outs)
    if math.prod(shape) < 10**5:
        mpo = tnconv.to_mpo(torch.randn(*shape), max_bond=2)
        assert (mpo.in_shape, mpo.out_shape) == (ins, outs)
        assert mpo.spatial == (len(shape) == 4 and shape[2] * shape[3] > 1)


@pytest.mark.parametrize("criteria", [{"max_error": 0.4}, {"ratio": 6.0}, {"max_bond": 3},
                                      {"keep": 0.5}, {"cutoff": 0.5}])
def test_criteria_of_to_mps_apply(criteria):
    w = torch.randn(64, 48, 3, 3)
    mpo = tnconv.to_mpo(w, **criteria)
    err = float((mpo.to_kernel().double() - w.double()).norm() / w.double().norm())
    assert mpo.rel_error == pytest.approx(err, rel=1e-4, abs=1e-5)
    if "max_error" in criteria:
        assert err <= 0.4
    if "ratio" in criteria:
        assert mpo.compression_ratio >= 6.0
    if "max_bond" in criteria:
        assert max(mpo.bond_dims) == 3
    assert mpo.summary()["kind"] == "mpo" and mpo.to_kernel().dtype == torch.float32


# ------------------------------------------------------------------ the layers' outputs

CONVS = [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=3, stride=2, padding=1, bias=False),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(2, 0), dilation=(1, 2)),
    dict(kernel_size=3, padding="same", dilation=2),
    dict(kernel_size=3, padding=(1, 2), padding_mode="reflect"),
    dict(kernel_size=1, stride=2, padding=1),
]


@pytest.mark.parametrize("settings", CONVS, ids=lambda s: ",".join(f"{k}={v}" for k, v in
                                                                  s.items()))
@pytest.mark.parametrize("order", ["first", "last"])
def test_conv_factored_path_equals_conv2d_of_the_kernel(settings, order):
    torch.manual_seed(0)
    conv = nn.Conv2d(12, 10, **settings).double()
    layer = MPOConv2d.from_conv(conv, max_bond=3, path="factored")
    x = torch.randn(3, 12, 9, 8, dtype=D)
    plan = order if layer.spatial else "pixel"
    layer._plans[(tuple(x.shape), tuple(layer.bond_dims))] = plan  # force the order
    ref = layer.to_conv()(x)
    torch.testing.assert_close(layer(x), ref, rtol=1e-10, atol=1e-12)
    layer.path = "dense"
    torch.testing.assert_close(layer(x), ref, rtol=1e-10, atol=1e-12)
    exact = MPOConv2d.from_conv(conv, path="factored")
    torch.testing.assert_close(exact(x), conv(x), rtol=1e-10, atol=1e-11)


def test_linear_factored_path_equals_linear_of_the_kernel():
    torch.manual_seed(1)
    fc = nn.Linear(48, 30).double()
    layer = MPOLinear.from_linear(fc, in_shape=(4, 3, 4), out_shape=(5, 3, 2), max_bond=4,
                                  path="factored")
    x = torch.randn(2, 5, 48, dtype=D)
    torch.testing.assert_close(layer(x), F.linear(x, layer.kernel(), layer.bias), rtol=1e-10,
                               atol=1e-12)
    assert layer(x).shape == (2, 5, 30)
    exact = MPOLinear.from_linear(fc, path="factored")
    torch.testing.assert_close(exact(x), fc(x), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.to_linear()(x), F.linear(x, layer.kernel(), layer.bias))


def _grads(layer: nn.Module, x: torch.Tensor, path: str) -> list[torch.Tensor]:
    layer.path = path
    layer.zero_grad()
    x = x.clone().requires_grad_(True)
    out = layer(x)
    (out * torch.linspace(-1, 1, out.numel(), dtype=D).reshape(out.shape)).sum().backward()
    return [x.grad, *(p.grad for p in layer.parameters())]


@pytest.mark.parametrize("make, shape", [
    (lambda: MPOConv2d(8, 12, 3, stride=2, padding=1, max_bond=3, dtype=D), (2, 8, 7, 7)),
    (lambda: MPOConv2d(8, 6, 1, max_bond=2, dtype=D), (2, 8, 5, 5)),
    (lambda: MPOLinear(24, 16, max_bond=3, dtype=D), (4, 24)),
], ids=["conv3x3", "conv1x1", "linear"])
def test_gradients_match_the_dense_path(make, shape):
    torch.manual_seed(2)
    layer = make()
    x = torch.randn(*shape, dtype=D)
    for a, b in zip(_grads(layer, x, "factored"), _grads(layer, x, "dense"), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_auto_takes_the_cheaper_path():
    small = MPOLinear(256, 256, max_bond=2)
    est = small.estimate((32, 256))
    assert est["factored"].score < est["dense"].score
    exact = MPOLinear(64, 64)  # full bonds: cotengra's best order rebuilds the weight too,
    est = exact.estimate((32, 64))  # and a tie goes to F.linear
    assert est["dense"].score <= est["factored"].score
    exact(torch.randn(32, 64))
    assert set(exact._plans.values()) == {False}
    x = torch.randn(32, 256)
    torch.testing.assert_close(small(x), F.linear(x, small.kernel(), small.bias), rtol=1e-4,
                               atol=1e-5)
    assert set(small._plans.values()) == {True}
    conv = MPOConv2d(64, 16, 3, padding=1, max_bond=2)  # 4x fewer outputs: the spatial core last
    assert conv.estimate((2, 64, 8, 8))["order"] == "last"


def test_factored_paths_compile_without_graph_breaks():
    """The path lookup is a constant for torch.compile (the batch size is part of the path,
    so shapes are static: ``dynamic=False``)."""
    torch._dynamo.reset()
    for layer, x in [(MPOLinear(64, 48, max_bond=3, path="factored"), torch.randn(2, 3, 64)),
                     (MPOConv2d(16, 8, 3, padding=1, max_bond=3, path="factored"),
                      torch.randn(2, 16, 6, 6))]:
        compiled = torch.compile(layer, fullgraph=True, backend="eager", dynamic=False)
        torch.testing.assert_close(compiled(x), layer(x))


# ------------------------------------------------------------------ the path cache


def test_cotengra_path_is_searched_once_and_stored(tnconv_cache):
    clear_path_cache()
    layer = MPOLinear(64, 48, max_bond=3, path="factored")
    x = torch.randn(5, 64)
    y = layer(x)
    first = path_cache_info()
    assert first.searches == 1 and first.disk_reads == 0
    files = sorted((tnconv_cache / "cotengra").glob("*.json"))
    assert len(files) == 1 and cache_dir("cotengra") == tnconv_cache / "cotengra"
    torch.testing.assert_close(layer(x), y)
    again = path_cache_info()
    assert again.searches == 1 and again.memory_hits > first.memory_hits
    clear_path_cache()  # a new process: the path comes from disk, no search
    torch.testing.assert_close(layer(x), y)
    assert path_cache_info()[1:3] == (1, 0)
    layer(torch.randn(6, 64))  # another batch size is another structure
    assert path_cache_info().searches == 1
    files[0].write_text("{not json")  # a damaged file is searched again and rewritten
    clear_path_cache()
    torch.testing.assert_close(layer(x), y)
    assert path_cache_info().searches == 1
    assert json.loads(files[0].read_text())["path"]
    before = path_cache_info().searches
    found = hyper_path([("n", "i"), ("i", "j")], [(7, 3), (3, 2)], ("n", "j"), persist=False)
    assert found.source == "search" and path_cache_info().searches == before + 1
    assert len(list((tnconv_cache / "cotengra").glob("*.json"))) == 2


# ------------------------------------------------------------------ models


def _model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, groups=4),
                         nn.Flatten(), nn.Linear(16 * 6 * 6, 32), nn.ReLU(), nn.Linear(32, 10))


def test_tensorize_mpo_converts_convs_and_linears_and_densify_restores():
    model = _model().eval()
    with pytest.warns(UserWarning, match="grouped"):
        small, report = tnconv.tensorize(model, kind="mpo", max_bond=4, progress=False)
    assert [r.name for r in report.layers] == ["0", "4", "6"] and report.skipped == ["2"]
    assert [type(small[i]).__name__ for i in (0, 2, 4, 6)] == [
        "MPOConv2d", "Conv2d", "MPOLinear", "MPOLinear"]
    assert report.model_params_after < report.model_params_before
    x = torch.randn(2, 3, 8, 8)
    dense = densify(small)
    assert [type(dense[i]) for i in (0, 4, 6)] == [nn.Conv2d, nn.Linear, nn.Linear]
    torch.testing.assert_close(dense(x), small(x), rtol=1e-4, atol=1e-5)
    only, rep = tnconv.tensorize(model, kind="mpo", layers="4", progress=False)
    assert [r.name for r in rep.layers] == ["4"]
    torch.testing.assert_close(only(x), model(x), rtol=1e-4, atol=1e-5)  # exact: no criteria
    with pytest.raises(ValueError, match="converts nn.Conv2d layers only.*kind='mpo'"):
        tnconv.tensorize(model, kind="mps", layers=["0", "4"], progress=False)
    assert type(tnconv.tensorize(nn.Linear(16, 8), kind="mpo")[0]) is MPOLinear
    mha = nn.MultiheadAttention(16, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, rep = tnconv.tensorize(nn.Sequential(mha), kind="mpo", progress=False)
    assert rep.skipped == ["0.out_proj"] and caught


def test_checkpoint_round_trip_of_mpo_layers(tmp_path):
    torch.manual_seed(4)
    dense = tnconv.cnn4(10, 1)
    small = tnconv.tensorize(dense, kind="mpo", layers=["block2.conv", "classifier.fc"],
                             max_bond=3, progress=False)[0].eval()
    small.block2.conv.path = "factored"
    specs = factorized_specs(small)
    assert specs == {
        "block2.conv": {"kind": "mpo", "path": "factored", "in_shape": [8, 4],
                        "out_shape": [8, 8]},
        "classifier.fc": {"kind": "mpo", "path": "auto", "in_shape": [8, 8, 4],
                          "out_shape": [5, 2, 1]}}
    path = tnconv.save_checkpoint(small, tmp_path / "mpo.pt", meta={"model": "cnn4"})
    loaded, meta = tnconv.load_checkpoint(path)
    assert meta["num_classes"] == 10
    for name in specs:
        a, b = loaded.get_submodule(name), small.get_submodule(name)
        assert type(a) is type(b) and a.bond_dims == b.bond_dims and a.path == b.path
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(loaded(x), small(x), rtol=1e-5, atol=1e-6)
    fresh = refactorize(tnconv.cnn4(10, 1), specs)
    fresh.load_state_dict(small.state_dict())
    assert fresh.classifier.fc.bond_dims == small.classifier.fc.bond_dims == [3, 3]


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("kwargs, error, message", [
    ({"in_shape": (4, 4)}, ValueError, "in_shape .* has product 16, but the kernel has 32"),
    ({"out_shape": (8, 0)}, ValueError, "out_shape sub-legs must all be >= 1"),
    ({"in_shape": (-4, -8)}, ValueError, "in_shape sub-legs must all be >= 1"),
    ({"in_shape": (4, 8), "out_shape": (4, 4, 4)}, ValueError, "one number of sub-leg pairs"),
    ({"in_shape": (32, 1), "out_shape": (64, 1)}, ValueError, "pair 1 .* two sub-legs of size 1"),
    ({"in_shape": [4.0, 8.0]}, TypeError, "in_shape must be a sequence of ints"),
    ({"max_bond": 0}, ValueError, "max_bond must be >= 1"),
    ({"pairs": 0}, ValueError, "pairs must be >= 1"),
    ({"ratio": 0.5}, ValueError, "ratio must be > 1"),
    ({"tol": 1}, TypeError, "unexpected keyword"),
])
def test_bad_decomposition_input(kwargs, error, message):
    with pytest.raises(error, match=message):
        tnconv.to_mpo(torch.randn(64, 32), **kwargs)


def test_bad_kernels_and_layers():
    for shape in [(8, 4, 3), (8, 4, 3, 3, 3)]:
        with pytest.raises(ValueError, match="2-D Linear weight .* or a 4-D Conv2d weight"):
            tnconv.to_mpo(torch.randn(*shape))
    with pytest.raises(ValueError, match="at least two sites"):
        tnconv.to_mpo(torch.randn(8, 8), pairs=1)
    with pytest.raises(ValueError, match="groups=1"):
        MPOConv2d.from_conv(nn.Conv2d(8, 8, 3, groups=2))
    with pytest.raises(ValueError, match="groups=1"):
        MPOConv2d(8, 8, 3, groups=8)
    with pytest.raises(TypeError, match="torch.nn.Linear"):
        MPOLinear.from_linear(nn.Conv2d(8, 8, 3))
    with pytest.raises(ValueError, match="unknown path"):
        MPOLinear(8, 8, path="fast")
    with pytest.raises(ValueError, match=r"expected an input \[..., 8\]"):
        MPOLinear(8, 8)(torch.randn(2, 9))
    with pytest.raises(ValueError, match="not an nn.Conv2d or nn.Linear"):
        refactorize(nn.Sequential(nn.ReLU()), {"0": {"kind": "mpo", "in_shape": [2],
                                                      "out_shape": [2]}})
