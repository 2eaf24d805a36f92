"""The README's Python snippets run as written (on small stand-ins for the models and data)."""

from __future__ import annotations

import re
from pathlib import Path

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
                                     "Correlation compression: the study"])
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
    for code in blocks:
        exec(compile(code, f"README.md ({section})", "exec"), ns)
