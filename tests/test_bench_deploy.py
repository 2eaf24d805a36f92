"""benchmarks/bench_deploy.py: its ratios and goal verdicts from rows, its tables, and one
variant's runtimes built on a toy model (a failing compile recorded, not raised)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import load_benchmark

load_benchmark("_common")  # the scripts' sibling module: `import _common` finds it loaded
bench = load_benchmark("bench_deploy")


def _row(model, batch, variant, runtime, ms, **kw):
    return {"model": model, "batch": batch, "variant": variant, "runtime": runtime,
            "median_ms": ms, "params_fraction": 1.0 if variant == "dense" else 0.25,
            "conv_flops_fraction": 1.0 if variant == "dense" else 0.3,
            "inference_macs_fraction": None, "error": None, **kw}


def _rows():
    rows = []
    for model, onnx_small, eager_small in (("a", 4.0, 6.5), ("b", 6.0, 5.0)):
        rows += [_row(model, 64, "dense", "eval", 12.0), _row(model, 64, "dense", "eager", 10.0),
                 _row(model, 64, "dense", "onnx", 10.0),
                 _row(model, 64, "params 0.25", "eval", 11.0),
                 _row(model, 64, "params 0.25", "eager", eager_small),
                 _row(model, 64, "params 0.25", "onnx", onnx_small),
                 _row(model, 1, "dense", "eval", 1.0), _row(model, 1, "dense", "eager", 1.0),
                 _row(model, 1, "dense", "onnx", 0.5),
                 _row(model, 1, "params 0.25", "eval", 2.0),
                 _row(model, 1, "params 0.25", "eager", 0.9),
                 _row(model, 1, "params 0.25", "onnx", 0.45)]
    bench._add_ratios(rows)
    return rows


def _cfg(**kw):
    return {**bench.CONFIG, "runtimes": ["eval", "eager", "onnx"], **kw}


def test_ratios_are_to_dense_in_the_same_runtime_and_to_dense_eval():
    by = {(r["model"], r["batch"], r["variant"], r["runtime"]): r for r in _rows()}
    cell = by[("a", 64, "params 0.25", "onnx")]
    assert cell["ratio"] == pytest.approx(0.4) and cell["ratio_vs_dense_eval"] == (
        pytest.approx(4.0 / 12.0))
    assert by[("a", 64, "dense", "eager")]["ratio"] == 1.0
    assert by[("a", 64, "dense", "eager")]["ratio_vs_dense_eval"] == pytest.approx(10 / 12)
    assert by[("b", 1, "params 0.25", "eval")]["ratio"] == pytest.approx(2.0)


def test_goals_pass_and_fail_from_the_rows():
    found = {(g["runtime"], g["model"]): g for g in bench.goals(_rows(), _cfg())}
    assert set(found) == {("onnx", "a"), ("onnx", "b"), ("eager", "a"), ("eager", "b")}
    assert found[("onnx", "a")]["passed"] is True      # 0.40 <= 0.5
    assert found[("onnx", "b")]["passed"] is False     # 0.60 > 0.5
    assert found[("eager", "a")]["passed"] is False    # 0.65 > 0.6
    assert found[("eager", "b")]["passed"] is True     # 0.50 <= 0.6
    assert found[("onnx", "b")]["ratio"] == pytest.approx(0.6)


def test_a_goal_without_its_measurement_is_not_a_pass():
    rows = [r for r in _rows() if not (r["model"] == "a" and r["runtime"] == "onnx"
                                       and r["variant"] != "dense")]
    rows.append(_row("a", 64, "params 0.25", "onnx", None, error="RuntimeError: boom"))
    bench._add_ratios(rows)
    found = {(g["runtime"], g["model"]): g for g in bench.goals(rows, _cfg())}
    assert found[("onnx", "a")]["passed"] is None
    assert found[("onnx", "a")]["why_not"] == "RuntimeError: boom"
    none = bench.goals(_rows(), _cfg(goals={"compile": 0.6}))
    assert [g["passed"] for g in none] == [None, None]  # compile not measured at all
    lines = bench.goal_lines(found.values())
    assert any("not measured (RuntimeError: boom)" in line for line in lines)
    assert any(line.endswith("-> PASS") for line in lines)


def test_compile_modes_name_their_columns_and_goals_cover_them():
    cfg = _cfg(runtimes=["eager", "compile"], compile_modes=["default", "max-autotune"])
    assert bench._runtime_keys(cfg) == ["eager", "compile", "compile:max-autotune"]
    rows = [_row("m", 64, "dense", "compile:max-autotune", 10.0),
            _row("m", 64, "params 0.25", "compile:max-autotune", 5.0)]
    bench._add_ratios(rows)
    (goal,) = bench.goals(rows, {**cfg, "goals": {"compile": 0.6}})
    assert goal["runtime"] == "compile:max-autotune" and goal["passed"] is True


def test_tables_and_batch_one_lines():
    rows = _rows()
    cfg = _cfg()
    text = bench.table(rows, cfg)
    assert "a, batch 64" in text and "b, batch 1" in text and "0.40x [0.33]" in text
    md = bench.table(rows, cfg, md=True)
    assert "| variant |" in md and "**0.40x**" in md
    lines = bench.batch_one_summary(rows, cfg)
    assert lines[0].startswith("a, params 0.25 / dense at batch 1: eval 2.00x")
    result = {"config": cfg, "rows": rows, "goals": bench.goals(rows, cfg), "batch_one": lines,
              "command": "python benchmarks/bench_deploy.py", "onnxruntime": "x",
              "environment": {"timestamp": "2026-01-01T00:00:00", "device_name": "cpu",
                              "torch": "2", "threads": 2, "busy": True}}
    section = bench.readme(result)
    assert "machine busy" in section and "-> FAIL" in section


def _toy() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 3)).eval()


def test_build_variant_runs_every_runtime_and_records_a_failing_compile(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")

    def broken(*_a, **_k):
        raise RuntimeError("inductor says no\nmore lines")

    monkeypatch.setattr(bench, "_compiled", broken)
    cfg = _cfg(runtimes=["eval", "eager", "compile", "onnx"])
    x = torch.randn(1, 1, 8, 8)
    calls, info = bench.build_variant(_toy(), "dense", x, cfg, "cpu", tmp_path)
    assert sorted(calls) == ["eager", "eval", "onnx"]
    assert info["errors"] == {"compile": "RuntimeError: inductor says no"}
    assert info["checks"]["onnx_rel_err"] < 1e-4 and info["folded"] == 1
    with torch.inference_mode():
        assert torch.allclose(calls["eager"](), calls["eval"](), atol=1e-5)
    assert bench.conv_macs(_toy(), x) == 8 * 64 * 9 + 8 * 64 * 8 * 9
