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
    assert all(cmd in out.stdout for cmd in ("train", "eval", "spectra", "sweep", "study"))


@pytest.mark.parametrize("command,expected", [
    ("train", ["--model", "--dataset", "--epochs", "--out", "--device", "--seed"]),
    ("eval", ["checkpoint", "--device", "--subset"]),
    ("spectra", ["source", "--cuts", "--out", "--include-linear"]),
    ("sweep", ["source", "--dataset", "--cuts", "--levels", "--layers", "--mode",
               "--test-subset", "--device", "--out", "examples:", "tnconv sweep "]),
    ("study", ["--full", "--quick", "--tiny", "--profiles", "--out", "--levels", "examples:",
               "tnconv study ", "Tiny CI profile"]),
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
    from tnconv.checkpoints import save_checkpoint
    from tnconv.models import cnn4

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
    from tnconv.checkpoints import save_checkpoint
    from tnconv.models import cnn4

    ckpt = save_checkpoint(cnn4(10, 3, widths=(4, 4, 4, 4)), tmp_path / "rgb.pt",
                           meta={"model": "cnn4", "dataset": "cifar10",
                                 "model_kwargs": {"widths": [4, 4, 4, 4]}})
    assert main(["eval", str(ckpt), "--dataset", "fashion-mnist", "--subset", "8",
                 "--device", "cpu"]) == 2
    line = _error_line(capsys)
    assert "in_channels" in line and "fashion-mnist" in line


def test_choices_come_from_the_registries(capsys):
    from tnconv.data import DATASETS
    from tnconv.models import MODELS
    from tnconv.train import OPTIMIZERS, SCHEDULES

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for registry in (MODELS, DATASETS, OPTIMIZERS, SCHEDULES):
        assert "{" + ",".join(registry) + "}" in text
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--model", "cnn4", "--dataset", "cifar10", "--optimizer", "adam"])
    assert exit_.value.code == 2
    assert "invalid choice: 'adam' (choose from 'sgd', 'adamw')" in _error_line(capsys)


@pytest.fixture
def narrow_checkpoint(fmnist_train, tmp_path):
    """A narrow cnn4 trained for one epoch on 512 Fashion-MNIST images, as a checkpoint."""
    from tnconv.checkpoints import save_checkpoint
    from tnconv.models import cnn4
    from tnconv.train import fit

    torch.manual_seed(0)
    model = cnn4(10, 1, widths=(4, 8, 8, 8))
    fit(model, fmnist_train.subset(512), epochs=1, batch_size=64, progress=False)
    return save_checkpoint(model, tmp_path / "narrow.pt", meta={
        "model": "cnn4", "dataset": "fashion-mnist", "model_kwargs": {"widths": [4, 8, 8, 8]}})


def test_sweep_writes_the_api_rows_and_resumes(narrow_checkpoint, tmp_path, capsys):
    import tnconv
    from tnconv.checkpoints import load_checkpoint
    from tnconv.data import load_dataset

    out = tmp_path / "sweep.csv"
    argv = ["sweep", str(narrow_checkpoint), "--dataset", "fashion-mnist", "--cuts",
            "out|in,kh,kw", "out,kh|in,kw", "--levels", "1", "0.5", "0.1", "--layers",
            "block2.conv", "block3.*", "--test-subset", "300", "--device", "cpu",
            "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    assert "12 single rows, 12 new" in capsys.readouterr().out
    text = out.read_text()
    # the same rows as the API writes with out=
    model, _ = load_checkpoint(narrow_checkpoint)
    test = load_dataset("fashion-mnist", "test").subset(300, seed=0)
    api = tmp_path / "api.csv"
    rows = tnconv.sweep(model, test, layers=["block2.conv", "block3.*"],
                        cuts=["out|in,kh,kw", "out,kh|in,kw"], levels=[1.0, 0.5, 0.1],
                        out=api, device="cpu", progress=False)
    assert api.read_text() == text and len(rows) == 12 == len(text.splitlines()) - 1
    assert {r["layer"] for r in rows} == {"block2.conv", "block3.conv"}
    assert any(r["accuracy_drop"] > 0 for r in rows)  # truncation changed something
    # a rerun resumes: nothing recomputed, no row duplicated
    assert main(argv) == 0
    assert "12 single rows, 0 new" in capsys.readouterr().out
    assert out.read_text() == text
    # all layers at once, as JSON lines
    jl = tmp_path / "all.jsonl"
    assert main([*argv[:-1], str(jl), "--mode", "all"]) == 0
    assert len(jl.read_text().splitlines()) == 2 * 3


def test_sweep_errors_are_one_line(narrow_checkpoint, tmp_path, capsys):
    assert main(["sweep", str(narrow_checkpoint), "--dataset", "cifar10", "--out",
                 str(tmp_path / "x.csv"), "--device", "cpu"]) == 2
    assert "cifar10" in _error_line(capsys)  # not found here, or in_channels do not fit
    assert main(["sweep", "cnn4", "--out", str(tmp_path / "x.csv")]) == 2
    assert "--dataset" in _error_line(capsys)
    assert main(["sweep", str(narrow_checkpoint), "--levels", "0.5", "--test-subset", "50",
                 "--layers", "block1.conv", "--out", str(tmp_path / "x.txt"), "--device",
                 "cpu", "--no-progress"]) == 2
    assert ".csv" in _error_line(capsys)


def test_study_command_and_examples_build_the_same_config(monkeypatch, tmp_path):
    import importlib.util

    import tnconv.study.experiment as experiment

    seen = []
    monkeypatch.setattr(experiment, "run_study", lambda cfg: seen.append(cfg) or {"out": "x"})
    opts = ["--tiny", "--out", str(tmp_path / "run"), "--levels", "1,0.5", "--no-progress"]
    assert main(["study", "--profiles", "cnn4", *opts]) == 0
    spec = importlib.util.spec_from_file_location("cnn4_cuts", REPO / "examples" / "cnn4_cuts.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(opts) == 0
    assert seen[0] == seen[1]
    assert seen[0].profile == "tiny" and seen[0].levels == (1.0, 0.5) and not seen[0].progress
    assert main(["study", "--quick", "--model", "resnet18"]) == 0  # resnet50 set, model replaced
    assert seen[2].model == "resnet18" and "chosen on the command line" in seen[2].note
    assert seen[2].out == "runs/resnet_cuts-fashion-mnist-quick" and seen[2].profile == "quick"
    # --retrain-epochs, and its deprecated old name --epochs
    assert main(["study", "--profiles", "cnn4", *opts, "--retrain-epochs", "4"]) == 0
    assert main(["study", "--profiles", "cnn4", *opts, "--epochs", "4"]) == 0
    assert seen[3].retrain_epochs == seen[4].retrain_epochs == 4
