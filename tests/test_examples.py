"""The study examples run end to end on their tiny profile (the CI smoke test)."""

from __future__ import annotations

import ast
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
PLOTS = ["entropy.png", "accuracy_vs_norm_loss.png", "compressibility_vs_depth.png",
         "all_layers.png", "recovery.png"]


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", "/tmp/numba"),
           "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, str(ROOT / "examples" / script), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _have_data() -> bool:
    from tnconv.data import load_dataset

    try:
        load_dataset("fashion-mnist", "test")
    except FileNotFoundError:
        return False
    return True


needs_data = pytest.mark.skipif(not _have_data(), reason="Fashion-MNIST not available")


@pytest.mark.parametrize("script", ["cnn4_cuts.py", "resnet_cuts.py"])
def test_help_documents_every_option(script):
    res = _run(script, "--help")
    assert res.returncode == 0, res.stderr
    for opt in ("--dataset", "--full", "--quick", "--tiny", "--out", "--device",
                "--retrain-epochs", "--train-epochs", "--levels", "--layers", "--cuts",
                "--threads"):
        assert opt in res.stdout
    assert "--epochs " not in res.stdout  # the deprecated alias is accepted, not shown
    assert "cpu (model" not in res.stdout and "quick (model" in res.stdout
    assert res.stdout.count("(default") >= 3


@pytest.mark.parametrize("script,profiles", [("cnn4_cuts.py", "cnn4"),
                                              ("resnet_cuts.py", "resnet50")])
def test_examples_are_thin_wrappers(script, profiles):
    """An example only picks its profile set and calls the package's study command."""
    source = (ROOT / "examples" / script).read_text()
    tree = ast.parse(source)
    body = tree.body[1:]  # after the docstring
    code = [n for n in body if not isinstance(n, (ast.Import, ast.ImportFrom))]
    assert sum(n.end_lineno - n.lineno + 1 for n in code) <= 15, "the study belongs in tnconv"
    imported = {(n.module, a.name) for n in body if isinstance(n, ast.ImportFrom)
                for a in n.names}
    assert ("tnconv.cli", "study_main") in imported
    assert not any(isinstance(n, ast.ClassDef) for n in ast.walk(tree))
    assert f'PROFILES = "{profiles}"' in source and "study_main(" in source


@needs_data
@pytest.mark.parametrize("script", ["cnn4_cuts.py", "resnet_cuts.py"])
def test_example_tiny_profile_end_to_end(script, tmp_path):
    out = tmp_path / "run"
    res = _run(script, "--tiny", "--out", str(out), "--no-progress")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert "Tiny CI profile" in res.stdout
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == PNG, name
    with open(out / "sweep_single.csv") as fh:
        single = list(csv.DictReader(fh))
    with open(out / "sweep_all.csv") as fh:
        all_rows = list(csv.DictReader(fh))
    assert len(single) == 2 * 2 * 3 and len(all_rows) == 2 * 3
    assert {r["layer"] for r in single} == {"block2.conv", "block4.conv"}
    findings = json.loads((out / "findings.json").read_text())
    summary = (out / "summary.md").read_text()
    # the summary states numbers computed from the tables
    base = float(single[0]["baseline_accuracy"])
    assert findings["baseline_accuracy"] == pytest.approx(base)
    assert f"{100 * base:.1f}%" in summary
    assert findings["cuts"][0]["cut"] in summary
    rec = findings["recovery"]["plain"]["accuracy"]
    assert len(rec) == 2 and f"{100 * rec[-1]:.1f}%" in summary
    atlas = (out / "atlas.csv").read_text().splitlines()
    assert len(atlas) == 1 + 4 * 7  # every conv layer over all 7 cuts

    if script == "cnn4_cuts.py":  # the same command again resumes: no sweep row recomputed
        res = _run(script, "--tiny", "--out", str(out), "--no-progress")
        assert res.returncode == 0, res.stderr[-4000:]
        run = json.loads((out / "run.json").read_text())
        assert run["sweep_single"]["rows_new"] == 0 and run["sweep_all"]["rows_new"] == 0
        with open(out / "sweep_single.csv") as fh:
            assert list(csv.DictReader(fh)) == single
        # the same command gives the same numbers (a fresh run folder, same machine)
        again = tmp_path / "again"
        res = _run(script, "--tiny", "--out", str(again), "--no-progress")
        assert res.returncode == 0, res.stderr[-4000:]
        for name in ("sweep_single.csv", "sweep_all.csv", "recovery.csv", "atlas.csv"):
            assert (again / name).read_text() == (out / name).read_text(), name
