"""Sweeps on Ray (tnconv.study.distributed): the same rows as a local sweep, faults, resume.

One local Ray instance (2 CPUs) serves the module; the model is a narrow cnn4 on a few hundred
Fashion-MNIST images, so the whole file takes well under a minute once Ray is up.
"""

from __future__ import annotations

import functools
import os
import sys

import pytest
import torch

import tnconv
from tnconv.records import RowLog
from tnconv.study import distributed
from tnconv.study.sweep import SWEEP_FIELDS, sweep
from tnconv.study.sweep_engine import row_key

CUTS = ["out|in,kh,kw", "out,kh|in,kw"]
LEVELS = [1.0, 0.5, 0.25]
STRINGS = ("mode", "layer", "kind", "shape", "cut", "criterion")


@pytest.fixture(scope="module")
def ray_instance():
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        import ray  # CI installs the ray extra (make setup): its absence is a failure there
    else:
        ray = pytest.importorskip("ray")
    from ray import cloudpickle  # Ray's own copy pickles the tasks' arguments

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the hooks below, by value
    os.environ.setdefault("RAY_worker_niceness", "0")  # as sweep's own local ray.init()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def setup(fmnist_test):
    torch.manual_seed(0)
    model = tnconv.cnn4(10, 1, widths=(8, 16, 16, 16)).eval()
    data = fmnist_test.subset(300, seed=1)
    return model, data


def _local(model, data, **kw):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' thread count: bit-identical losses
    try:
        return sweep(model, data, cuts=CUTS, levels=LEVELS, progress=False, batch_size=100, **kw)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def local_rows(setup):
    return {m: _local(*setup, mode=m) for m in ("single", "all")}


def _by_key(rows):
    return {row_key(r): r for r in rows}


def _same(rows, expected, csv=False):
    if csv:  # a CSV file reads an empty string field back as "" (the local sweep's too)
        expected = [{k: "" if v is None and k in STRINGS else v for k, v in r.items()}
                    for r in expected]
    got, want = _by_key(rows), _by_key(expected)
    assert len(got) == len(rows) == len(want)
    assert got == want  # every column, accuracies and losses exactly


@pytest.mark.parametrize("mode", ["single", "all"])
def test_ray_rows_equal_local_rows(ray_instance, setup, local_rows, mode, tmp_path):
    out = tmp_path / "rows.csv"
    rows = sweep(*setup, cuts=CUTS, levels=LEVELS, mode=mode, out=out, progress=False,
                 batch_size=100, executor="ray")
    assert rows.info["executor"] == "ray"
    assert rows.info["tasks"] == (4 * 2 if mode == "single" else 2 * 3)
    _same(rows, local_rows[mode])
    assert [list(r) for r in rows] == [list(SWEEP_FIELDS)] * len(rows)
    _same(RowLog(out, SWEEP_FIELDS, string_fields=STRINGS).read(), local_rows[mode], csv=True)
    assert (tmp_path / "rows.csv.meta.json").exists()


def _kill_once(marker, kill_at, module, args):
    """A forward pre-hook: the worker process dies on the ``kill_at``-th call (over all
    processes, counted in ``marker``), once."""
    with open(marker, "a") as fh:
        fh.write("x")
    if os.path.getsize(marker) == kill_at:
        os._exit(1)


def _die_when_truncated(weight_sum, module, args):
    """A forward pre-hook: the worker dies whenever this layer's kernel is truncated."""
    if abs(float(module.weight.sum()) - weight_sum) > 1e-6:
        os._exit(1)


def test_worker_killed_mid_task_is_retried(ray_instance, setup, local_rows, tmp_path):
    model, data = setup
    marker = tmp_path / "calls"
    killer = tnconv.cnn4(10, 1, widths=(8, 16, 16, 16))
    killer.load_state_dict(model.state_dict())
    killer.eval().block3.conv.register_forward_pre_hook(
        functools.partial(_kill_once, str(marker), 12))
    out = tmp_path / "rows.jsonl"
    rows = sweep(killer, data, cuts=CUTS, levels=LEVELS, out=out, progress=False,
                 batch_size=100, executor="ray")
    assert marker.stat().st_size > 12  # the worker died once, and the work went on
    _same(rows, local_rows["single"])
    assert len(out.read_text().splitlines()) == len(rows)  # no row lost or written twice


def test_failing_task_names_it_and_keeps_rows_then_resumes(ray_instance, setup, local_rows,
                                                          tmp_path):
    model, data = setup
    bad = tnconv.cnn4(10, 1, widths=(8, 16, 16, 16))
    bad.load_state_dict(model.state_dict())
    bad.eval().block2.conv.register_forward_pre_hook(
        functools.partial(_die_when_truncated, float(bad.block2.conv.weight.detach().sum())))
    out = tmp_path / "rows.csv"
    with pytest.raises(distributed.SweepTaskError, match=r"layer 'block2.conv', cut"):
        distributed.ray_sweep(bad, data, cuts=CUTS, levels=LEVELS, out=out, progress=False,
                              batch_size=100, max_retries=1)
    kept = RowLog(out, SWEEP_FIELDS, string_fields=STRINGS).read()
    want = _by_key(local_rows["single"])
    assert kept and all(row_key(r) in want and r == want[row_key(r)] for r in kept)
    assert not any(r["layer"] == "block2.conv" for r in kept)
    # the same sweep without the fault resumes: only the missing rows are computed
    rows = sweep(model, data, cuts=CUTS, levels=LEVELS, out=out, progress=False,
                 batch_size=100, executor="ray")
    assert rows.info["rows_new"] == len(want) - len(kept)
    _same(rows, local_rows["single"])


def test_interrupted_driver_resumes(ray_instance, setup, local_rows, tmp_path):
    model, data = setup
    out = tmp_path / "rows.jsonl"
    seen = []

    def stop_after_four(row):
        seen.append(row)
        if len(seen) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep(model, data, cuts=CUTS, levels=LEVELS, mode="all", out=out, progress=False,
              batch_size=100, executor="ray", callback=stop_after_four)
    rows = sweep(model, data, cuts=CUTS, levels=LEVELS, mode="all", out=out, progress=False,
                 batch_size=100, executor="ray")
    assert rows.info["rows_new"] == len(local_rows["all"]) - 4
    assert rows.info["tasks"] == len(local_rows["all"]) - 4  # finished tasks are skipped
    _same(rows, local_rows["all"])


def test_missing_ray_says_how_to_install(monkeypatch, setup):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ImportError, match=r'pip install "tnconv\[ray\]"'):
        sweep(*setup, cuts=CUTS, levels=LEVELS, progress=False, executor="ray")


def test_unknown_executor(setup):
    with pytest.raises(ValueError, match="unknown executor 'dask'; valid: local, ray"):
        sweep(*setup, executor="dask")


def test_import_tnconv_does_not_import_ray():
    import subprocess

    code = "import sys, tnconv, tnconv.study; print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_cli_sweep_ray_writes_the_local_rows(ray_instance, setup, tmp_path, capsys):
    from tnconv.checkpoints import save_checkpoint
    from tnconv.cli import main

    model, _ = setup
    ckpt = save_checkpoint(model, tmp_path / "narrow.pt", meta={
        "model": "cnn4", "dataset": "fashion-mnist", "model_kwargs": {"widths": [8, 16, 16, 16]}})
    argv = ["sweep", str(ckpt), "--dataset", "fashion-mnist", "--cuts", *CUTS, "--levels",
            "1", "0.5", "--layers", "block2.conv", "--test-subset", "200", "--batch-size", "100",
            "--no-progress"]
    assert main([*argv, "--device", "cpu", "--out", str(tmp_path / "local.csv")]) == 0
    assert main([*argv, "--ray", "--out", str(tmp_path / "ray.csv")]) == 0  # Ray's own device
    assert "4 single rows, 4 new" in capsys.readouterr().out
    log = functools.partial(RowLog, fields=SWEEP_FIELDS, string_fields=STRINGS)
    local = log(tmp_path / "local.csv").read()
    _same(log(tmp_path / "ray.csv").read(), local)


def test_atlas_of_many_models_on_ray_equals_local(ray_instance, setup, tmp_path):
    from tnconv.study.model_comparison import entropy_by_depth, plot_entropy_by_depth

    model, _ = setup
    models = {"narrow": model, "cnn4": "cnn4"}
    torch.manual_seed(0)
    local = tnconv.spectra_atlas_many(models, CUTS)
    torch.manual_seed(0)
    remote = tnconv.spectra_atlas_many(models, CUTS, executor="ray")
    assert [r["model"] for r in local] == ["narrow"] * 8 + ["cnn4"] * 8
    assert [(r["layer"], r["cut"], r["depth"], r["entropy"]) for r in local[:8]] == \
        [(r["layer"], r["cut"], r["depth"], r["entropy"]) for r in remote[:8]]
    narrow = tnconv.spectra_atlas(model, CUTS)
    assert [r["entropy"] for r in local[:8]] == [r["entropy"] for r in narrow]
    assert [r["depth"] for r in local[:8:2]] == [0.0, 1 / 3, 2 / 3, 1.0]
    frame = entropy_by_depth(local)
    assert set(frame["model"]) == {"narrow", "cnn4"} and frame["entropy"].between(0, 1).all()
    png = plot_entropy_by_depth(local, tmp_path / "cmp.png")
    assert os.path.getsize(png) > 1000
    with pytest.raises(ValueError, match="not in the atlas"):
        plot_entropy_by_depth(local, tmp_path / "x.png", cuts=["out|in"])


def test_study_runner_on_ray_writes_the_local_rows(ray_instance, setup, tmp_path):
    """``run_study`` with ``ray=""`` (``tnconv study --ray``): the same sweep rows as a local
    run of the same study."""
    import dataclasses

    from tnconv.study.experiment import run_study
    from tnconv.study.profiles import PROFILE_SETS

    model, data = setup
    cfg = dataclasses.replace(PROFILE_SETS["cnn4"].profiles["tiny"], test_subset=None,
                              retrain_epochs=0, progress=False, device="cpu")
    log = functools.partial(RowLog, fields=SWEEP_FIELDS, string_fields=STRINGS)
    rows = {}
    for name, ray in (("local", None), ("ray", "")):
        out = tmp_path / name
        run_study(dataclasses.replace(cfg, out=str(out), ray=ray), model=model, test_data=data)
        rows[name] = (log(out / "sweep_single.csv").read(), log(out / "sweep_all.csv").read())
    for ray_rows, local_rows in zip(rows["ray"], rows["local"]):
        assert len(local_rows) > 0
        _same(ray_rows, local_rows)
