"""Factorized models (tensorize, compress) round-trip through checkpoints and `tnconv eval`."""

from __future__ import annotations

import pytest
import torch

import tnconv
from tnconv.cli import main
from tnconv.layers import factorized_specs, refactorize
from tnconv.layers.convert import KINDS
from tnconv.models import cnn4


def _mixed_model() -> torch.nn.Module:
    """cnn4 with one MPS (custom chain, truncated), one Tucker, one CP and one dense conv."""
    torch.manual_seed(0)
    dense = cnn4(10, 1)
    small = tnconv.tensorize(dense, layers="block1.conv", max_bond=2, progress=False)[0]
    small.block2.conv = tnconv.TuckerConv2d.from_conv(dense.block2.conv, ranks=(5, 3))
    small.block3.conv = tnconv.CPConv2d.from_conv(dense.block3.conv, rank=4, n_iter=2)
    small.block1.conv.path = "dense"
    return small.eval()


def test_specs_describe_every_factorized_layer():
    specs = factorized_specs(_mixed_model())
    assert {n: s["kind"] for n, s in specs.items()} == {
        "block1.conv": "mps", "block2.conv": "tucker", "block3.conv": "cp"}
    assert specs["block1.conv"]["cut"] == "out|kh|kw|in"
    assert specs["block1.conv"]["path"] == "dense"
    assert factorized_specs(cnn4(10, 1)) == {}


def test_checkpoint_round_trip_keeps_ranks_and_outputs(tmp_path):
    small = _mixed_model()
    path = tnconv.save_checkpoint(small, tmp_path / "small.pt", meta={"model": "cnn4"})
    loaded, meta = tnconv.load_checkpoint(path)
    assert set(meta["factorized"]) == {"block1.conv", "block2.conv", "block3.conv"}
    assert loaded.block1.conv.bond_dims == small.block1.conv.bond_dims == [2, 2, 1]  # in = 1
    assert loaded.block2.conv.ranks == (5, 3)
    assert loaded.block3.conv.rank == 4
    assert loaded.block1.conv.path == "dense"
    assert type(loaded.block4.conv) is torch.nn.Conv2d
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(loaded(x), small(x), rtol=1e-5, atol=1e-6)
    n_small = sum(p.numel() for p in small.parameters())
    assert sum(p.numel() for p in loaded.parameters()) == n_small < sum(
        p.numel() for p in cnn4(10, 1).parameters())


def test_split_chain_round_trips(tmp_path):
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(8, 16, 3)
    net = torch.nn.Sequential(conv)
    net[0] = tnconv.MPSConv2d.from_conv(conv, cut="out|kh|kw|in", split={"out": (4, 4)},
                                        max_bond=3)
    fresh = refactorize(torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3)), factorized_specs(net))
    fresh.load_state_dict(net.state_dict())
    assert fresh[0].split == {"out": (4, 4)} and fresh[0].bond_dims == net[0].bond_dims
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(fresh(x), net(x))


@pytest.mark.parametrize("specs, message", [
    ({"nope": {"kind": "mps", "cut": "out|in,kh,kw"}}, "not an nn.Conv2d"),
    ({"0": {"kind": "svd"}}, "unknown factorized kind"),
    ({"0": "mps"}, "unknown factorized kind"),
])
def test_refactorize_rejects_bad_specs(specs, message):
    with pytest.raises(ValueError, match=message):
        refactorize(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), specs)
    assert sorted(KINDS) == ["cp", "mpo", "mps", "tucker"]


def test_cli_eval_reports_a_factorized_checkpoint(tmp_path, capsys, fmnist_test):
    small = _mixed_model()
    path = tnconv.save_checkpoint(small, tmp_path / "small.pt",
                                  meta={"model": "cnn4", "dataset": "fashion-mnist"})
    assert main(["eval", str(path), "--subset", "200", "--no-progress"]) == 0
    out = capsys.readouterr().out
    n = sum(p.numel() for p in small.parameters())
    assert f"{n} parameters" in out and "accuracy" in out
