"""tensorize / densify on whole models, training through factorized layers, bond monitoring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import tnconv
from tnconv.layers import (
    CPConv2d,
    EntropyLog,
    MPSConv2d,
    TuckerConv2d,
    bond_entropies,
    recompress,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding="valid", padding_mode="reflect"),
                      nn.ReLU(),
                      nn.Conv2d(12, 12, 3, padding=1, groups=3),
                      nn.Conv2d(12, 16, 1)),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    ).eval()


def _x(seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 3, 12, 11, generator=torch.Generator().manual_seed(seed))


def _rel(a, b):
    return float((a - b).detach().norm() / b.detach().norm())


@pytest.mark.parametrize("kind, cls", [("mps", MPSConv2d), ("tucker", TuckerConv2d)])
def test_tensorize_densify_round_trip_exact(kind, cls):
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = _x()
    want = net(x)
    new, report = tnconv.tensorize(net, kind=kind)
    # the input model is untouched
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert sum(isinstance(m, nn.Conv2d) for m in net.modules()) == 4
    assert [r.name for r in report.layers] == ["0", "3.0", "3.2", "3.3"]
    assert all(isinstance(new.get_submodule(r.name), cls) for r in report.layers)
    assert _rel(new(x), want) <= 1e-5
    back = tnconv.densify(new)
    assert not any(isinstance(m, cls) for m in back.modules())
    assert sum(type(m) is nn.Conv2d for m in back.modules()) == 4
    assert _rel(back(x), want) <= 1e-5
    for k, v in back.state_dict().items():
        assert v.shape == before[k].shape and torch.allclose(v, before[k], atol=1e-5), k
    assert isinstance(new.get_submodule("0"), cls)  # densify copied, did not modify


def test_report_counts_and_table():
    net = _net()
    new, report = tnconv.tensorize(net, kind="tucker", ranks=2)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert report.params_before == sum(p.numel() for c in convs for p in c.parameters())
    assert report.params_after == sum(new.get_submodule(r.name).num_params
                                      for r in report.layers)
    assert report.model_params_before == sum(p.numel() for p in net.parameters())
    assert report.model_params_after == sum(p.numel() for p in new.parameters())
    assert report.compression_ratio == pytest.approx(report.params_before / report.params_after)
    assert report.compression_ratio > 1
    assert report.params_fraction == pytest.approx(1 / report.compression_ratio)
    with pytest.warns(FutureWarning, match="TensorizeReport.ratio is renamed"):
        assert report.ratio == report.compression_ratio
    rows = report.to_dicts()
    assert rows[0]["name"] == "0" and rows[0]["shape"] == "8x3x3x3"
    assert "whole model" in str(report)
    df = report.to_pandas()
    assert list(df["name"]) == ["0", "3.0", "3.2", "3.3"]


def test_layer_selection_patterns_and_predicate():
    net = _net()
    new, report = tnconv.tensorize(net, kind="cp", layers="3.*", rank=2, n_iter=3)
    assert [r.name for r in report.layers] == ["3.0", "3.2", "3.3"]
    assert type(new[0]) is nn.Conv2d and isinstance(new[3][0], CPConv2d)
    new, report = tnconv.tensorize(net, layers=["0", "3.3"], max_bond=2)
    assert [r.name for r in report.layers] == ["0", "3.3"]
    new, report = tnconv.tensorize(net, layers=lambda n, m: m.kernel_size != (1, 1))
    assert [r.name for r in report.layers] == ["0", "3.0", "3.2"]
    new, report = tnconv.tensorize(net, inplace=True, layers="0")
    assert new is net and isinstance(net[0], MPSConv2d)


def test_tensorize_bad_arguments():
    net = _net()
    with pytest.raises(ValueError, match="mps, tucker, cp"):
        tnconv.tensorize(net, kind="tt")
    with pytest.raises(ValueError, match="matches no nn.Conv2d.*3.0"):
        tnconv.tensorize(net, layers="layer4.*")
    with pytest.raises(TypeError, match="layers must be"):
        tnconv.tensorize(net, layers=[3])
    with pytest.raises(TypeError, match="nn.Module"):
        tnconv.tensorize("resnet50")
    with pytest.raises(TypeError, match="nn.Module"):
        tnconv.densify(None)
    with pytest.raises(TypeError, match="unexpected keyword"):
        tnconv.tensorize(net, kind="cp", cut="out|kh|kw|in")


def test_densify_single_layer():
    conv = nn.Conv2d(3, 4, 3)
    layer = TuckerConv2d.from_conv(conv)
    assert type(tnconv.densify(layer)) is nn.Conv2d


@pytest.mark.parametrize("kind", ["mps", "tucker", "cp"])
def test_training_steps_reduce_loss(kind):
    """A tensorized model trains: a few SGD steps on a fixed batch lower the loss."""
    net = _net().train()
    crit = {"mps": {"max_bond": 3}, "tucker": {"ranks": 3}, "cp": {"rank": 4, "n_iter": 5}}
    new, _ = tnconv.tensorize(net, kind=kind, **crit[kind])
    x, y = _x(), torch.tensor([1, 3])
    opt = torch.optim.SGD(new.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(15):
        loss = nn.functional.cross_entropy(new(x), y)
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in new.parameters() if p.grad is not None)
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_fit_trains_tensorized_model_and_logs_entropies():
    from tnconv.data import ImageDataset

    g = torch.Generator().manual_seed(0)
    ds = ImageDataset(torch.randn(32, 3, 12, 12, generator=g), torch.randint(0, 5, (32,),
                      generator=g), "cifar10", "train")
    net, _ = tnconv.tensorize(_net(), kind="mps", max_bond=3)
    log = EntropyLog()
    history = tnconv.fit(net, ds, epochs=2, batch_size=16, progress=False, augment=False,
                         schedule="constant", lr=0.01,
                         channels_last=False, callback=log)
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(h["train_loss"]))
                                      for h in history)
    assert [h["epoch"] for h in log.history] == [1, 2]
    ent = log.history[-1]["entropies"]
    assert sorted(ent) == ["0", "3.0", "3.2", "3.3"]
    # the last entry is the trained cores' bond entropies: a float64 numpy SVD of each trained
    # kernel across sites[:k+1] | sites[k+1:] gives them independently
    for name, logged in ent.items():
        layer = net.get_submodule(name)
        w = layer.kernel().detach().double().numpy()
        legs = ("out", "in", "kh", "kw")
        sites = [g.split(",") for g in layer.cut.split("|")]
        perm = [legs.index(n) for g in sites for n in g]
        ref = []
        for k in range(len(sites) - 1):
            rows = math.prod(w.shape[legs.index(n)] for g in sites[: k + 1] for n in g)
            s = np.linalg.svd(w.transpose(perm).reshape(rows, -1), compute_uv=False)
            p = s**2 / (s**2).sum()
            p = p[p > 0]
            ref.append(float(-(p * np.log2(p)).sum()))
        assert logged == pytest.approx(ref, abs=1e-4), name
        assert min(ref) > 0.1  # trained kernels are far from product states


def test_bond_entropies_and_recompress_rank1():
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(6, 8, 3, padding=1)
    with torch.no_grad():
        vs = [torch.randn(n, generator=g) for n in (8, 6, 3, 3)]
        conv.weight.copy_(torch.einsum("o,i,h,w->oihw", *vs))
    layer = MPSConv2d.from_conv(conv)
    assert layer.bond_dims == [1, 1, 1]  # exact chains drop zero singular values: minimal
    ent = bond_entropies(layer)[""]
    assert ent == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)
    dims = recompress(layer, 1e-6)[""]
    assert dims == layer.bond_dims == [1, 1, 1]
    x = torch.randn(2, 6, 5, 5, generator=g)
    assert _rel(layer(x), conv(x)) <= 1e-5
    # a generic kernel has positive entropies and keeps its bonds at a tiny threshold
    other = MPSConv2d.from_conv(nn.Conv2d(6, 8, 3))
    assert all(e > 0.5 for e in other.bond_entropies())
    assert other.recompress(1e-12) == [8, 18, 6]


def test_tensorize_densify_keep_mode_and_top_level_conv():
    net = _net()  # in eval mode
    new, _ = tnconv.tensorize(net, kind="tucker")
    assert not any(m.training for m in new.modules())
    assert not any(m.training for m in tnconv.densify(new).modules())
    conv = nn.Conv2d(3, 4, 3)
    layer, report = tnconv.tensorize(conv, kind="mps")
    assert type(layer) is MPSConv2d and [r.name for r in report.layers] == [""]
    assert type(conv) is nn.Conv2d and not list(conv.children())  # source untouched
    x = _x()
    assert _rel(layer(x), conv(x)) <= 1e-5
    assert type(tnconv.densify(layer)) is nn.Conv2d


def test_recompress_keeps_mode_and_frozen_cores():
    layer = MPSConv2d.from_conv(nn.Conv2d(3, 4, 3)).eval().requires_grad_(False)
    recompress(layer, 1e-3)
    assert not any(m.training for m in layer.modules())
    assert not any(p.requires_grad for p in layer.parameters())


class _StdConv2d(nn.Conv2d):
    """Weight-standardised convolution (as in timm): more than F.conv2d of its weight."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return nn.functional.conv2d(x, w, self.bias, self.stride, self.padding)


class _PlainSubclass(nn.Conv2d):
    """A subclass that only adds an attribute: still a plain convolution."""


def test_tensorize_leaves_conv_subclasses_with_their_own_forward():
    torch.manual_seed(0)
    net = nn.Sequential(_StdConv2d(3, 8, 3, padding=1), nn.ReLU(), _PlainSubclass(8, 8, 3))
    x = torch.randn(2, 3, 8, 8)
    with pytest.warns(UserWarning, match="subclass layer"):
        new, report = tnconv.tensorize(net, kind="mps")
    assert report.skipped == ["0"] and [r.name for r in report.layers] == ["2"]
    assert type(new[0]) is _StdConv2d and type(new[2]).__name__ == "MPSConv2d"
    torch.testing.assert_close(new(x), net(x), rtol=1e-4, atol=1e-5)
