"""The README's Python snippets run as written (on small stand-ins for the models and data)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

import tnconv

README = Path(__file__).resolve().parents[1] / "README.md"


def _sections() -> dict[str, list[str]]:
    """``{section title: [python blocks]}`` of the README."""
    out: dict[str, list[str]] = {}
    title = ""
    for part in re.split(r"^(## .*)$", README.read_text(), flags=re.M):
        if part.startswith("## "):
            title = part[3:].strip()
        else:
            out.setdefault(title, []).extend(re.findall(r"```python\n(.*?)```", part, re.S))
    return out


def _namespace() -> dict:
    """What the snippets assume: a small ResNet, a conv layer, a few labelled images."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    return {"tnconv": tnconv, "torch": torch, "model": model, "train": (x, y), "test": (x, y),
            "conv": torch.nn.Conv2d(64, 64, 3, padding=1)}


@pytest.mark.parametrize("section", ["A quick tour of the core", "Tensorized layers",
                                     "Correlation compression: the study",
                                     "Compression to a budget"])
def test_readme_snippets_run(section, tmp_path, monkeypatch):
    blocks = _sections().get(section)
    assert blocks, f"README has no python block under '## {section}'"
    monkeypatch.chdir(tmp_path)
    ns = _namespace()
    if section.startswith("Correlation"):
        # the study snippet retrains for 3 epochs: one batch of 256 synthetic images each
        from tnconv.data import ImageDataset

        g = torch.Generator().manual_seed(1)
        ns["train"] = ImageDataset(torch.randn(256, 3, 32, 32, generator=g),
                                   torch.randint(0, 10, (256,), generator=g), "cifar10", "train")
    if section.startswith("Compression"):
        # cnn4 on 1 x 28 x 28 images (the snippet saves it under the name "cnn4")
        g = torch.Generator().manual_seed(2)
        ns["model"] = tnconv.cnn4(10, 1).eval()
        ns["test_data"] = (torch.randn(200, 1, 28, 28, generator=g),
                           torch.randint(0, 10, (200,), generator=g))
        ns["train_data"] = ns["test_data"]
    for code in blocks:
        exec(compile(code, f"README.md ({section})", "exec"), ns)
    _CHECKS[section](ns)


def _check_tour(ns: dict) -> None:
    """The figures the tour's comments state, against float64 numpy."""
    w = ns["w"]
    assert set(ns["tn"].outer_inds()) == {"out0", "out1", "out2", "in", "kh", "kw"}
    assert len(tnconv.all_cuts(w)) == 7
    m = w.double().numpy().transpose(0, 2, 1, 3).reshape(64 * 3, 32 * 3)  # out,kh | in,kw
    ref = np.linalg.svd(m, compute_uv=False)
    np.testing.assert_allclose(ns["s"].numpy(), ref, atol=1e-5 * ref[0], rtol=0)
    report = ns["report"]
    assert (report.rank, report.full_rank) == (24, 96)  # keep=0.25 of 96
    tail = np.sqrt((ref[24:] ** 2).sum() / (ref**2).sum())
    assert report.rel_error == pytest.approx(tail, abs=1e-6)
    assert float(ns["curve"].rel_error[24]) == pytest.approx(tail, abs=1e-6)
    assert float((ns["wt"] - w).norm() / w.norm()) == pytest.approx(tail, abs=1e-5)
    assert report.params_after == (192 + 96) * 24
    mps = ns["mps"]
    assert mps.bond_dims == [8, 8, 8]
    assert float((mps.to_kernel() - w).norm() / w.norm()) == pytest.approx(mps.rel_error)
    atlas = ns["atlas"]
    assert len(atlas) == 53 * 7 and atlas["cut"].nunique() == 7  # 53 conv layers of ResNet-50
    assert (atlas["rank_1pct"] >= atlas["rank_10pct"]).all()


def _check_layers(ns: dict) -> None:
    """CP at ratio=4 has about 4x fewer parameters; tensorize/densify keep the outputs."""
    conv, layer = ns["conv"], ns["layer"]
    assert isinstance(layer, tnconv.CPConv2d)
    assert 3.6 <= sum(p.numel() for p in conv.parameters()) / layer.num_params <= 4.4
    report = ns["report"]
    assert 3.6 <= report.compression_ratio <= 4.4
    assert report.compression_ratio == pytest.approx(report.params_before / report.params_after)
    assert len(report.layers) == 20  # every conv of the ResNet-18 stand-in
    dense, small = ns["dense"], ns["small"]
    assert not any(isinstance(m, tnconv.MPSConv2d) for m in dense.modules())
    x = ns["train"][0][:2]
    with torch.no_grad():
        torch.testing.assert_close(dense(x), small(x), rtol=1e-3, atol=1e-4)


def _check_study(ns: dict) -> None:
    """Per-layer max_bond caps, one sweep row per (layer, cut, level), the retraining curve."""
    report = ns["report"]
    assert len(report) == 20
    for row in report:
        cap = 16 if row["layer"].startswith("layer4.") else 64
        assert max(row["ranks"]) <= cap, row["layer"]
    assert any(max(r["ranks"]) == 16 for r in report)  # layer4's 3x3 convs hit the cap
    rows = ns["rows"]
    assert len(rows) == 20 * 7 * 6
    full = [r for r in rows if r["rank"] == r["full_rank"]]
    assert full and all(r["accuracy"] == r["baseline_accuracy"] for r in full)
    lines = Path("runs/x/sweep.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + len(rows)
    curve = ns["curve"]
    assert [r["epoch"] for r in curve] == [0, 1, 2, 3]


def _check_compress(ns: dict) -> None:
    """A quarter of the conv parameters (within 2 %), the saved file loads back, densify works."""
    report, small = ns["report"], ns["small"]
    assert 0.25 * 0.98 <= report.params_fraction <= 0.25 * 1.02
    assert report.allocate == "sensitivity" and report.accuracy_finetuned is not None
    loaded, meta = tnconv.load_checkpoint("small.pt")
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(loaded(x), small.eval()(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ns["dense"].eval()(x), small(x), rtol=1e-4, atol=1e-4)
    assert len(report.to_pandas()) == 4


_CHECKS = {"A quick tour of the core": _check_tour, "Tensorized layers": _check_layers,
           "Correlation compression: the study": _check_study,
           "Compression to a budget": _check_compress}
