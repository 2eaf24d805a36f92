"""Resume fingerprints, one writer per results file, no NaN training or NaN checkpoint, and
clear errors at the boundary of sweep / fit / evaluate / retrain / checkpoints.

The concurrency tests run real processes (multiprocessing, spawn) on the same ``out=`` file.
"""

from __future__ import annotations

import copy
import multiprocessing as mp
import os
import signal
import sys
import warnings

import pytest
import torch
from torch import nn

import tnconv
from tnconv.checkpoints import load_checkpoint, save_checkpoint
from tnconv.data import ImageDataset
from tnconv.pretrained import train_or_load
from tnconv.records import FileLockedError, RowLog
from tnconv.study.retrain import retrain
from tnconv.study.sweep import SWEEP_FIELDS, sweep
from tnconv.train import evaluate, fit

KW = dict(cuts=["out|in,kh,kw", "out,kh|in,kw"], levels=(1.0, 0.5, 0.25), batch_size=32,
          progress=False)
ROWS = 4 * 2 * 3  # 4 conv layers x 2 cuts x 3 levels


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _model() -> nn.Module:
    torch.manual_seed(1)
    model = tnconv.cnn4(4, in_channels=1, widths=(4, 6, 8, 8))
    with torch.no_grad():
        model.classifier.fc.weight.mul_(20.0)  # predictions that depend on the input
    return model.eval()


def _data(n: int = 64, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 16, 16, generator=g)
    with torch.no_grad():
        y = _model()(x).argmax(1)
    y = torch.where(torch.arange(n) % 4 == 0, torch.randint(0, 4, (n,), generator=g), y)
    return x, y


def _log(path) -> RowLog:
    return RowLog(path, SWEEP_FIELDS, string_fields=["mode", "layer", "kind", "shape", "cut",
                                                     "criterion"])


# -- 1. resume fingerprint -------------------------------------------------------------------

@pytest.mark.parametrize("ext", [".csv", ".jsonl"])
def test_resume_refuses_another_model_with_the_same_baseline(tmp_path, ext):
    model, data = _model(), _data()
    out = tmp_path / f"s{ext}"
    first = sweep(model, data, out=out, **KW)
    assert (tmp_path / f"s{ext}.meta.json").is_file()
    assert not (tmp_path / f"s{ext}.lock").exists()  # released
    if ext == ".csv":  # the columns are unchanged
        assert out.read_text().splitlines()[0].split(",") == list(SWEEP_FIELDS)
    other = copy.deepcopy(model)
    with torch.no_grad():  # the same shift of every logit: same accuracy AND loss
        other.classifier.fc.bias.add_(1e-3)
    base, base2 = evaluate(model, data), evaluate(other, data)
    assert base["accuracy"] == base2["accuracy"]
    assert base["loss"] == pytest.approx(base2["loss"], rel=1e-6)
    with pytest.raises(ValueError, match="model weights"):
        sweep(other, data, out=out, **KW)
    # the same sweep resumes, nothing to do, the file untouched
    again = sweep(model, data, out=out, **KW)
    assert again.info["rows_new"] == 0 and list(again) == list(first)


def test_resume_says_what_differs(tmp_path):
    model, data = _model(), _data()
    out = tmp_path / "s.csv"
    sweep(model, data, out=out, **KW)
    x, y = data
    y2 = y.clone()
    y2[:2] = y2[:2].flip(0) if y2[0] != y2[1] else (y2[:2] + 1) % 4
    cases = [
        (dict(data=(x[:60], y[:60])), "data .*64 images in the file, 60 now"),
        (dict(data=(x, y2)), "data .*labels"),
        (dict(data=(x + 1e-3, y)), "data .*images"),
        (dict(levels=(1.0, 0.5)), "levels"),
        (dict(cuts=["out|in,kh,kw"]), "cuts"),
        (dict(criterion="max_error", levels=(0.0, 0.5, 0.9)), "criterion"),
    ]
    for change, words in cases:
        kw = {**KW, "data": data, **change}
        d = kw.pop("data")
        with pytest.raises(ValueError, match=words):
            sweep(model, d, out=out, **kw)
    # cut spelling and level order do not matter
    kw = {**KW, "cuts": ["out,kh | in,kw", "out | in,kh,kw"], "levels": (0.25, 1.0, 0.5)}
    assert sweep(model, data, out=out, **kw).info["rows_new"] == 0


def test_old_file_without_fingerprint_resumes_with_a_warning(tmp_path):
    model, data = _model(), _data()
    out = tmp_path / "s.jsonl"
    stop = []

    def interrupt(row):
        stop.append(row)
        if len(stop) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep(model, data, out=out, callback=interrupt, **KW)
    (tmp_path / "s.jsonl.meta.json").unlink()  # as written by an older tnconv
    with pytest.warns(UserWarning, match="no fingerprint"):
        rows = sweep(model, data, out=out, **KW)
    assert rows.info["rows_new"] == ROWS - 5 and len(rows) == ROWS
    assert (tmp_path / "s.jsonl.meta.json").is_file()  # checked from now on


# -- 2. one writer per file ------------------------------------------------------------------

def _sweep_and_wait(path, started, release) -> None:
    """Child process: sweep into ``path``, pausing after the first row (lock held)."""
    torch.set_num_threads(1)

    def pause(row):
        if not started.is_set():
            started.set()
            release.wait(120)

    sweep(_model(), _data(), out=path, callback=pause, **KW)


def _start_writer(path):
    ctx = mp.get_context("spawn")
    started, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_sweep_and_wait, args=(str(path), started, release))
    proc.start()
    assert started.wait(120), "the writer process did not start"
    return proc, release


def test_second_writer_is_refused_while_the_first_runs(tmp_path):
    out = tmp_path / "s.csv"
    proc, release = _start_writer(out)
    try:
        assert (tmp_path / "s.csv.lock").read_text().strip() == str(proc.pid)
        with pytest.raises(FileLockedError, match=f"another process \\(pid {proc.pid}"):
            sweep(_model(), _data(), out=out, **KW)
        with pytest.raises(FileLockedError, match="out="):
            _log(out).open()
    finally:
        release.set()
        proc.join(120)
    assert proc.exitcode == 0
    rows = _log(out).read()
    assert len(rows) == ROWS
    assert len({(r["layer"], r["cut"], r["level"]) for r in rows}) == ROWS  # no duplicates
    assert sweep(_model(), _data(), out=out, **KW).info["rows_new"] == 0


def test_stale_lock_of_a_killed_writer_is_taken_over(tmp_path):
    out = tmp_path / "s.jsonl"
    proc, _ = _start_writer(out)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(60)
    assert (tmp_path / "s.jsonl.lock").read_text().strip() == str(proc.pid)  # left behind
    with pytest.warns(UserWarning, match=f"stale lock of pid {proc.pid}"):
        rows = sweep(_model(), _data(), out=out, **KW)
    assert len(rows) == ROWS and rows.info["rows_new"] == ROWS - 1
    assert not (tmp_path / "s.jsonl.lock").exists()


def test_duplicates_are_dropped_on_resume_with_a_warning(tmp_path):
    model, data = _model(), _data()
    out = tmp_path / "s.csv"
    whole = sweep(model, data, out=out, **KW)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines + lines[3:9]))  # what two writers at once left behind
    with pytest.warns(UserWarning, match="dropped 6 duplicate rows"):
        rows = sweep(model, data, out=out, **KW)
    assert rows.info["rows_new"] == 0 and list(rows) == list(whole)
    assert len(out.read_text().splitlines()) == ROWS + 1  # rewritten without them
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        sweep(model, data, out=out, **KW)  # clean now: no warning


# -- 3. NaN training -------------------------------------------------------------------------

def _train_set(n: int = 64) -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    return ImageDataset(torch.randn(n, 1, 32, 32, generator=g),
                        torch.randint(0, 10, (n,), generator=g), "mnist", "train")


def test_fit_stops_when_the_loss_diverges():
    model = tnconv.cnn4(10, 1, widths=(4, 4, 8, 8))
    with pytest.raises(ValueError, match="diverged"):
        fit(model, _train_set(), epochs=2, batch_size=16, lr=1e30, schedule="constant",
            progress=False)


def test_save_checkpoint_refuses_non_finite_weights(tmp_path):
    model = tnconv.cnn4(10, 1, widths=(4, 4, 8, 8))
    with torch.no_grad():
        model.classifier.fc.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite weights.*classifier.fc.weight"):
        save_checkpoint(model, tmp_path / "m.pt", meta={"model": "cnn4"})
    assert list(tmp_path.iterdir()) == []


def test_train_or_load_keeps_the_last_good_checkpoint(tmp_path, fmnist_train):
    path = tmp_path / "m.pt"
    good = tnconv.cnn4(10, 1)
    save_checkpoint(good, path, meta={"model": "cnn4", "dataset": "fashion-mnist"})
    before = path.read_bytes()
    with pytest.raises(ValueError, match="diverged"):
        train_or_load("cnn4", "fashion-mnist", path=path, force=True, epochs=1, device="cpu",
                      train_subset=128, test_subset=32, batch_size=32, lr=1e30,
                      schedule="constant", progress=False)
    assert path.read_bytes() == before
    load_checkpoint(path)


# -- 4. the train command and checkpoint files -----------------------------------------------

def _no_training(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("trained although the command should have stopped first")

    monkeypatch.setattr(tnconv.train, "fit", boom)


@pytest.mark.parametrize("lr", ["nan", "inf", "-0.1", "0"])
def test_cli_train_rejects_bad_lr(lr, capsys, tnconv_cache, tmp_path, fmnist_train):
    from tnconv.cli import main

    status = main(["train", "--model", "cnn4", "--dataset", "fashion-mnist", "--epochs", "1",
                   "--subset", "64", "--eval-subset", "32", "--device", "cpu", "--no-progress",
                   f"--lr={lr}", "--out", str(tmp_path / "m.pt")])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and "lr" in err
    assert not (tmp_path / "m.pt").exists()


def test_cli_train_checks_the_output_before_training(tmp_path, capsys, monkeypatch,
                                                     tnconv_cache):
    from tnconv.cli import main

    _no_training(monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    base = ["train", "--model", "cnn4", "--dataset", "fashion-mnist", "--epochs", "1",
            "--device", "cpu", "--no-progress", "--out"]
    assert main(base + [str(tmp_path)]) == 2  # a directory
    err = capsys.readouterr().err
    assert f"{tmp_path} is a directory" in err and ".tmp" not in err
    assert main(base + [str(blocker / "m.pt")]) == 2  # a folder that cannot be created
    err = capsys.readouterr().err
    assert "cannot write the checkpoint" in err and str(blocker / "m.pt") in err


def test_stale_tmp_files_are_removed_on_the_next_save(tmp_path):
    stale = tmp_path / ".m.pt.k2j3h4.tmp"
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / ".n.pt.k2j3h4.tmp"  # another checkpoint's: kept
    other.write_bytes(b"x")
    save_checkpoint(tnconv.cnn4(10, 1), tmp_path / "m.pt", meta={"model": "cnn4"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".n.pt.k2j3h4.tmp", "m.pt"]


def test_save_to_a_directory_names_the_directory(tmp_path):
    with pytest.raises(IsADirectoryError, match=f"{tmp_path} is a directory"):
        save_checkpoint(tnconv.cnn4(10, 1), tmp_path, meta={"model": "cnn4"})
    assert list(tmp_path.iterdir()) == []


# -- 5. bad inputs at the boundary -----------------------------------------------------------

_DS = _train_set(32)
_PAIR = (torch.randn(8, 1, 32, 32), torch.randint(0, 10, (8,)))
_NET = tnconv.cnn4(10, 1, widths=(4, 4, 8, 8))
_NO_CUDA = not torch.cuda.is_available()


def _rep():
    small, rep = tnconv.truncate_model(_NET, cut="out|in,kh,kw", keep=0.5,
                                       layers="block2.conv")
    return small, rep


#: (callable, exception type, words the message must contain: the argument's name)
BAD_CALLS = [
    # fit: hyper-parameters
    *[(lambda v=v: fit(_NET, _DS, epochs=1, lr=v, progress=False), exc, "lr")
      for v, exc in [(float("nan"), ValueError), (float("inf"), ValueError),
                     (-float("inf"), ValueError), (0.0, ValueError), (-1e-3, ValueError),
                     ("0.1", TypeError), (True, TypeError)]],
    *[(lambda v=v: fit(_NET, _DS, epochs=1, weight_decay=v, progress=False), exc,
       "weight_decay")
      for v, exc in [(float("nan"), ValueError), (float("inf"), ValueError),
                     (-1e-4, ValueError), ("0", TypeError)]],
    *[(lambda v=v: fit(_NET, _DS, epochs=1, batch_size=v, progress=False), ValueError,
       "batch_size") for v in (0, -4, True, 2.5, "8")],
    *[(lambda v=v: fit(_NET, _DS, epochs=v, progress=False), ValueError, "epochs")
      for v in (0, True, 1.5, "2")],
    (lambda: fit(_NET, _DS, epochs=1, label_smoothing=float("nan"), progress=False),
     ValueError, "label_smoothing"),
    (lambda: fit("cnn4", _DS, epochs=1, progress=False), TypeError, "model"),
    # evaluate
    (lambda: evaluate("cnn4", _DS), TypeError, "model"),
    (lambda: evaluate(_NET, _DS, batch_size=0), ValueError, "batch_size"),
    (lambda: evaluate(_NET, _DS, batch_size=False), ValueError, "batch_size"),
    # sweep
    (lambda: sweep("cnn4", _PAIR, progress=False), TypeError, "model"),
    (lambda: sweep(_NET, _PAIR, batch_size=0, progress=False), ValueError, "batch_size"),
    (lambda: sweep(_NET, _PAIR, batch_size=True, progress=False), ValueError, "batch_size"),
    (lambda: sweep(_NET, _PAIR, callback=5, progress=False), TypeError, "callback"),
    (lambda: sweep(_NET, _PAIR, device="gpu0", progress=False), ValueError, "device"),
    (lambda: sweep(_NET, _PAIR, device=3.5, progress=False), ValueError, "device"),
    # checkpoints
    (lambda: save_checkpoint("cnn4", "/tmp/never.pt", meta={"model": "cnn4"}), TypeError,
     "model"),
    (lambda: load_checkpoint("/nonexistent.pt", map_location="gpu"), ValueError,
     "map_location"),
    # retrain
    (lambda: retrain("cnn4", _DS, epochs=1, progress=False), TypeError, "model"),
    (lambda: retrain(_rep()[0], _DS, epochs=1, keep_truncation=True, progress=False,
                     truncation=[{**_rep()[1][0], "layer": "block9.conv"}]), ValueError,
     "truncation"),
    (lambda: retrain(_rep()[0], _DS, epochs=1, keep_truncation=True, progress=False,
                     truncation=[{k: v for k, v in _rep()[1][0].items() if k != "cut"}]),
     ValueError, "cut"),
    (lambda: retrain(_rep()[0], _DS, epochs=1, keep_truncation=True, progress=False,
                     truncation=[{**_rep()[1][0], "layer": "block2.relu"}]), ValueError,
     "truncation"),
    (lambda: retrain(_rep()[0], _DS, epochs=1, keep_truncation=True, progress=False,
                     truncation="block2.conv"), TypeError, "truncation"),
    (lambda: retrain(_rep()[0], _DS, epochs=1, keep_truncation=True, progress=False,
                     truncation=["block2.conv"]), TypeError, "truncation"),
    (lambda: retrain(_rep()[0], _DS, epochs=1, keep_truncation=True, progress=False,
                     truncation=[{k: v for k, v in _rep()[1][0].items()
                                  if k not in ("rank", "ranks")}]), ValueError, "rank"),
    (lambda: retrain(_rep()[0], _DS, epochs=1, lr=float("nan"), progress=False), ValueError,
     "lr"),
]
if _NO_CUDA:
    BAD_CALLS += [
        (lambda: sweep(_NET, _PAIR, device="cuda", progress=False), ValueError, "device"),
        (lambda: sweep(_NET, _PAIR, device=torch.device("cuda", 0), progress=False),
         ValueError, "device"),
        (lambda: load_checkpoint("/nonexistent.pt", map_location="cuda"), ValueError,
         "map_location"),
    ]


@pytest.mark.parametrize("call, exc, words", BAD_CALLS, ids=[
    f"{i}-{w}" for i, (_, _, w) in enumerate(BAD_CALLS)])
def test_bad_input_is_a_clear_error(call, exc, words):
    before = {k: v.clone() for k, v in _NET.state_dict().items()}
    with pytest.raises(exc) as info:
        call()
    assert words in str(info.value)
    assert all(torch.equal(v, before[k]) for k, v in _NET.state_dict().items())


def test_checkpoint_map_location_cuda_without_cuda(tmp_path):
    if not _NO_CUDA:
        pytest.skip("CUDA is available here")
    path = save_checkpoint(tnconv.cnn4(10, 1), tmp_path / "m.pt", meta={"model": "cnn4"})
    with pytest.raises(ValueError, match="map_location.*CUDA is not available"):
        load_checkpoint(path, map_location="cuda")


def test_sweep_callback_is_checked_before_the_first_row(tmp_path):
    out = tmp_path / "s.csv"
    with pytest.raises(TypeError, match="callback"):
        sweep(_model(), _data(), out=out, callback="print", **KW)
    assert not out.exists() and not (tmp_path / "s.csv.lock").exists()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
