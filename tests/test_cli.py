"""The tnconv command: --help, a tiny train / eval run, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tnconv.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_python_m_tnconv_help():
    out = subprocess.run([sys.executable, "-m", "tnconv", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "train" in out.stdout and "eval" in out.stdout


@pytest.mark.parametrize("command,expected", [
    ("train", ["--model", "--dataset", "--epochs", "--out", "--device", "--seed"]),
    ("eval", ["checkpoint", "--device", "--subset"]),
    ("spectra", ["source", "--cuts", "--out", "--include-linear"]),
])
def test_subcommand_help(capsys, command, expected):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert all(word in text for word in expected)


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_tiny_train_then_eval(fmnist_test, tmp_path, capsys):
    out = tmp_path / "cnn4.pt"
    status = main(["train", "--model", "cnn4", "--dataset", "fashion-mnist", "--epochs", "1",
                   "--subset", "1024", "--eval-subset", "500", "--batch-size", "64",
                   "--device", "cpu", "--out", str(out), "--no-progress"])
    assert status == 0 and out.is_file()
    printed = capsys.readouterr().out
    assert "test accuracy" in printed
    status = main(["eval", str(out), "--subset", "500", "--device", "cpu"])
    assert status == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("cnn4 on fashion-mnist (test, 500 images): accuracy")
    accuracy = float(line.split("accuracy ")[1].split(",")[0])
    meta = torch.load(out, weights_only=True)["meta"]
    assert accuracy == pytest.approx(meta["accuracy"], abs=1e-4)
    assert meta["epochs"] == 1 and meta["train_images"] == 1024
    assert accuracy > 0.3  # 16 steps of training already beat chance (0.10)


def _error_line(capsys_or_text):
    err = capsys_or_text if isinstance(capsys_or_text, str) else capsys_or_text.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tnconv")
    assert ": error: " in lines[0]
    return lines[0]


def test_errors_are_one_line(tmp_path, capsys, monkeypatch):
    assert main(["eval", str(tmp_path / "missing.pt")]) == 2
    assert _error_line(capsys).startswith("tnconv: error: no checkpoint")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["eval", str(bad)]) == 2
    assert "truncated or corrupt" in _error_line(capsys)
    for var, sub in (("TNCONV_DATA", "env"), ("TNCONV_CACHE", "cache"),
                     ("TNCONV_SYSTEM_DATA", "system")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    assert main(["train", "--model", "cnn4", "--dataset", "cifar10", "--device", "cpu",
                 "--out", str(tmp_path / "x.pt")]) == 2
    assert "cifar10 (train) not found; looked in" in _error_line(capsys)


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--model", "vgg", "--dataset", "cifar10"])
    assert exit_.value.code == 2
    line = _error_line(capsys.readouterr().err)
    assert "invalid choice: 'vgg'" in line and line.startswith("tnconv train: error:")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_a_clear_error(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "x.pt"), "--device", "cuda"]) == 2
    assert "CUDA is not available" in _error_line(capsys)


def test_spectra_of_a_checkpoint_equals_the_atlas(tmp_path, capsys):
    import tnconv
    from tnconv.models import cnn4
    from tnconv.train import save_checkpoint

    torch.manual_seed(0)
    model = cnn4(10, 1, widths=(4, 8, 8, 8))
    ckpt = save_checkpoint(model, tmp_path / "m.pt",
                           meta={"model": "cnn4", "dataset": "fashion-mnist", "num_classes": 10,
                                 "in_channels": 1, "model_kwargs": {"widths": (4, 8, 8, 8)}})
    out = tmp_path / "atlas.csv"
    assert main(["spectra", str(ckpt), "--cuts", "out|in,kh,kw;out,kh|in,kw",
                 "--out", str(out)]) == 0
    assert "8 (layer, cut) rows" in capsys.readouterr().out
    import pandas as pd

    table = pd.read_csv(out)
    ref = tnconv.spectra_atlas(model, cuts=["out|in,kh,kw", "out,kh|in,kw"]).to_pandas()
    assert list(table["layer"]) == list(ref["layer"])
    assert list(table["rank_10pct"]) == list(ref["rank_10pct"])
    assert table["entropy"].to_numpy() == pytest.approx(ref["entropy"].to_numpy(), abs=1e-6)


def test_spectra_by_model_name_prints_a_table(capsys):
    assert main(["spectra", "cnn4", "--in-channels", "1", "--cuts", "out|in,kh,kw"]) == 0
    text = capsys.readouterr().out
    assert "block4.conv" in text and "entropy" in text


def test_spectra_bad_cut_is_one_line(capsys):
    assert main(["spectra", "cnn4", "--cuts", "out|bogus"]) == 2
    assert "bogus" in _error_line(capsys)


def test_help_shows_single_percent_signs(capsys):
    with pytest.raises(SystemExit):
        main(["spectra", "--help"])
    text = capsys.readouterr().out
    assert "1%" in text and "%%" not in text


def test_os_errors_are_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    status = main(["spectra", "cnn4", "--in-channels", "1", "--cuts", "out|in,kh,kw",
                   "--out", str(blocker / "atlas.csv")])
    assert status == 2
    assert str(blocker) in _error_line(capsys)


def test_eval_on_a_dataset_that_does_not_fit_is_one_line(fmnist_test, tmp_path, capsys):
    from tnconv.models import cnn4
    from tnconv.train import save_checkpoint

    ckpt = save_checkpoint(cnn4(10, 3, widths=(4, 4, 4, 4)), tmp_path / "rgb.pt",
                           meta={"model": "cnn4", "dataset": "cifar10",
                                 "model_kwargs": {"widths": [4, 4, 4, 4]}})
    assert main(["eval", str(ckpt), "--dataset", "fashion-mnist", "--subset", "8",
                 "--device", "cpu"]) == 2
    line = _error_line(capsys)
    assert "in_channels" in line and "fashion-mnist" in line
