"""`tnconv compress`: a checkpoint in, a smaller checkpoint and a JSON report out; `tnconv eval`
reads it back."""

from __future__ import annotations

import json

import pytest
import torch

import tnconv
from tnconv.cli import main
from tnconv.models import cnn4


@pytest.fixture
def dense_checkpoint(tmp_path, fmnist_train):
    """A cnn4 trained for a few steps on 3000 Fashion-MNIST images (seconds), saved."""
    torch.manual_seed(0)
    model = cnn4(10, 1)
    tnconv.fit(model, fmnist_train, epochs=1, batch_size=256, lr=0.05, progress=False,
               device="cpu")
    return tnconv.save_checkpoint(model, tmp_path / "dense.pt",
                                  meta={"model": "cnn4", "dataset": "fashion-mnist"})


def test_compress_then_eval(dense_checkpoint, tmp_path, capsys, tnconv_cache):
    out = tmp_path / "small.pt"
    # vbmf: measured on data, quicker than sensitivity (tests/test_compress.py covers that)
    status = main(["compress", str(dense_checkpoint), "--params", "0.3", "--allocate",
                   "vbmf", "--subset", "300", "--out", str(out), "--no-progress",
                   "--no-latency", "--device", "cpu"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "saved" in printed and "block4.conv" in printed
    report = json.loads(out.with_suffix(".pt.json").read_text())
    assert 0.3 * 0.98 <= report["params_fraction"] <= 0.3 * 1.02
    small, meta = tnconv.load_checkpoint(out)
    assert meta["factorized"] and meta["compress_report"]["allocate"] == "vbmf"
    assert meta["compress_report"]["accuracy_compressed"] is not None
    dense, _ = tnconv.load_checkpoint(dense_checkpoint)
    n_small = sum(p.numel() for p in small.parameters())
    assert n_small < 0.5 * sum(p.numel() for p in dense.parameters())
    assert main(["eval", str(out), "--subset", "200", "--no-progress", "--device", "cpu"]) == 0
    assert f"{n_small} parameters" in capsys.readouterr().out


def test_compress_without_data_needs_a_data_free_allocation(tmp_path, capsys):
    path = tnconv.save_checkpoint(cnn4(10, 1), tmp_path / "nodata.pt", meta={"model": "cnn4"})
    out = tmp_path / "small.pt"
    assert main(["compress", str(path), "--out", str(out), "--no-progress"]) == 2
    assert "need data" in capsys.readouterr().err
    assert main(["compress", str(path), "--flops", "0.5", "--allocate", "energy", "--out",
                 str(out), "--no-progress", "--no-latency"]) == 2  # flops needs an image size
    capsys.readouterr()
    assert main(["compress", str(path), "--max-error", "0.5", "--allocate", "energy",
                 "--out", str(out), "--no-progress", "--no-latency"]) == 0
    assert tnconv.load_checkpoint(out)[1]["factorized"]
    capsys.readouterr()  # a data fit needs the sensitivity mode: a clear error, not a traceback
    assert main(["compress", str(path), "--max-error", "0.5", "--allocate", "energy",
                 "--fit", "data", "--out", str(out), "--no-progress", "--no-latency"]) == 2
    assert "fit='data'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["--params", "1.5"], ["--params", "0"], ["--params", "x"],
    ["--params", "0.5", "--flops", "0.5"], ["--allocate", "magic"], ["--method", "qr"],
    ["--fit", "best"],
])
def test_bad_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(["compress", "m.pt", "--out", "s.pt", *argv])
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err
