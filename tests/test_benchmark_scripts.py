"""The benchmark scripts as scripts: every ``benchmarks/*.py`` answers ``--help`` from any folder,
none edits ``sys.path`` or imports another benchmark (only the shared ``_common``), and
``_common``'s timing and result writing do what the scripts rely on."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if p.name != "_common.py")
NAMES = frozenset(p.stem for p in SCRIPTS)
#: What a script must not define: the helpers that live in ``_common`` now.
OWN_HELPERS = frozenset({"_cpu_name", "_timed", "_environment", "_versions", "_sync",
                         "split_data", "_conv_params"})
#: Environment code that belongs to ``_common.environment`` (module, attribute).
ENV_CALLS = frozenset({("os", "getloadavg"), ("platform", "processor"), ("platform", "machine"),
                       ("platform", "python_version"), ("platform", "platform"),
                       ("cuda", "get_device_name")})
_IMPORTERS = frozenset({"import_module", "__import__", "spec_from_file_location", "run_path",
                        "run_module"})

common = load_benchmark("_common")


def violations(source: str, benchmarks: Iterable[str] = NAMES, filename: str = "<source>"
               ) -> list[str]:
    """What a benchmark script's source must not do: touch ``sys.path`` (``sys.path.insert``,
    ``from sys import path``, ...) or import another benchmark script (``import bench_x``,
    ``from benchmarks.bench_x import ...``, ``importlib.import_module("bench_x")``); only
    ``_common`` may be imported. One line per violation."""
    names = set(benchmarks) | {"benchmarks"}
    tree = ast.parse(source, filename)
    sys_aliases = {"sys"}
    found = []

    def other_benchmark(module: str) -> bool:
        return module.split(".")[0] in names

    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "sys" and alias.asname:
                    sys_aliases.add(alias.asname)
                if other_benchmark(alias.name):
                    found.append(f"{where}: imports the benchmark {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                found.append(f"{where}: relative import (a script is not in a package)")
            elif module == "sys" and any(a.name == "path" for a in node.names):
                found.append(f"{where}: from sys import path")
            elif other_benchmark(module):
                found.append(f"{where}: imports from the benchmark {module}")
        elif isinstance(node, ast.Call):
            fn = node.func
            fname = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            strings = [a.value for a in node.args
                       if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            for text in strings if fname in _IMPORTERS else ():
                # "bench_x", "benchmarks.bench_x", "benchmarks/bench_x.py"
                if other_benchmark(text) or Path(text).stem in names:
                    found.append(f"{where}: {fname}({text!r}) loads a benchmark")
    for node in ast.walk(tree):  # sys.path (read or written): any use is a path edit here
        if (isinstance(node, ast.Attribute) and node.attr == "path"
                and isinstance(node.value, ast.Name) and node.value.id in sys_aliases):
            found.append(f"{filename}:{node.lineno}: uses sys.path")
    return found


def _env_calls(tree: ast.AST) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            base = node.func.value
            owner = base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")
            if (owner, node.func.attr) in ENV_CALLS:
                out.append(f"{owner}.{node.func.attr} (line {node.lineno})")
        if isinstance(node, ast.Constant) and node.value == "/proc/cpuinfo":
            out.append(f"/proc/cpuinfo (line {node.lineno})")
    return out


def test_every_script_is_found():
    assert {"bench_compress", "bench_decomp", "compress_latency", "mutation_check"} <= NAMES
    assert (BENCH / "_common.py").is_file()


def test_the_checker_reports_planted_violations():
    source = ("import sys\nimport os\nsys.path.insert(0, 'x')\nimport bench_decomp\n"
              "from benchmarks.bench_compress import CONFIG\nfrom _common import environment\n"
              "import importlib\nimportlib.import_module('bench_layers')\n")
    found = violations(source, NAMES)
    assert any(":3: uses sys.path" in v for v in found), found
    assert any(":4: imports the benchmark bench_decomp" in v for v in found), found
    assert any(":5: imports from the benchmark benchmarks.bench_compress" in v for v in found)
    assert any("import_module('bench_layers')" in v for v in found), found
    assert len(found) == 4, found  # _common, os and importlib are fine
    assert violations("import sys as s\ns.path.append('y')\n") == ["<source>:2: uses sys.path"]
    assert violations("from sys import path\n") == ["<source>:1: from sys import path"]
    assert violations("from . import bench_sweep\n")
    assert violations("import sys\nfrom _common import write_result\nprint(sys.argv)\n") == []


@pytest.mark.parametrize("path", [*SCRIPTS, BENCH / "_common.py"], ids=lambda p: p.name)
def test_no_sys_path_edit_and_no_other_benchmark_imported(path):
    assert violations(path.read_text(), NAMES - {path.stem}, path.name) == []


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_scripts_use_the_common_helpers(path):
    tree = ast.parse(path.read_text(), path.name)
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "_common" in imported, f"{path.name} does not use _common"
    own = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)} & OWN_HELPERS
    assert not own, f"{path.name} defines {own}: use _common's"
    assert not _env_calls(tree), f"{path.name}: environment code {_env_calls(tree)}"


@pytest.fixture(scope="module")
def helps(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """``python benchmarks/NAME.py --help`` of every script, run from an unrelated folder (a few
    at a time: each one starts Python and imports torch)."""
    cwd = tmp_path_factory.mktemp("elsewhere")
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path}

    def run(script: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), "--help"], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 1))) as pool:
        return dict(zip((p.name for p in SCRIPTS), pool.map(run, SCRIPTS)))


@pytest.mark.parametrize("name", [p.name for p in SCRIPTS])
def test_help_from_another_folder(helps, name):
    proc = helps[name]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"usage: {name}"), proc.stdout[:500]


# ------------------------------------------------------------------ _common itself


def test_interleaved_alternates_after_warm_up():
    log: list[str] = []
    calls = {"a": lambda: log.append("a") or len(log), "b": lambda: log.append("b") or -1}
    timed = common.interleaved(calls, 3, warmup=2)
    assert log == ["a", "b"] * 5
    assert list(timed) == ["a", "b"]
    assert [len(t.times) for t in timed.values()] == [3, 3]
    assert timed["a"].result == 9 and timed["b"].result == -1  # the last call's result
    s = timed["a"].summary()
    assert s["rounds"] == 3 and s["best_s"] <= s["median_s"] <= max(timed["a"].times)
    assert s["p10_s"] <= s["p90_s"] and s["std_s"] >= 0


def test_interleaved_adds_rounds_for_short_calls():
    def clock(fn):
        return fn(), 0.25

    calls = {"a": lambda: None, "b": lambda: None}
    assert len(common.interleaved(calls, 1, min_total_s=1.0, max_rounds=50,
                                  clock=clock)["a"].times) == 4
    assert len(common.interleaved(calls, 1, min_total_s=1.0, max_rounds=3,
                                  clock=clock)["b"].times) == 3
    assert len(common.interleaved(calls, 5, min_total_s=1.0, max_rounds=3,
                                  clock=clock)["b"].times) == 5
    one = common.interleaved({"a": lambda: 7}, 1, clock=clock)["a"]
    assert (one.median, one.best, one.std, one.spread, one.result) == (0.25, 0.25, 0.0,
                                                                         (0.25, 0.25), 7)


ENV_KEYS = {"timestamp", "python", "platform", "torch", "numpy", "tnconv", "versions", "device",
            "device_name", "cpu", "cpu_count", "threads", "cuda", "load_average", "busy"}


def test_environment_has_one_shape():
    env = common.environment(packages=("numpy", "surely_not_a_package_xyz"))
    assert set(env) == ENV_KEYS
    assert env["device"] == "cpu" and env["cuda"] is None and env["device_name"] == env["cpu"]
    assert env["versions"]["surely_not_a_package_xyz"] == "not installed"
    assert env["versions"]["numpy"] == env["numpy"]
    assert env["busy"] in (True, False, None)


def test_write_result_adds_the_environment_atomically(tmp_path):
    env = common.environment()
    out = common.write_result("ignored", {"rows": [1, 2], "config": (1, 2)}, tmp_path / "a" /
                              "r.json", env=env)
    record = json.loads(out.read_text())
    assert record["rows"] == [1, 2] and record["config"] == [1, 2]
    assert set(record["environment"]) == ENV_KEYS | {"load_average_end"}
    assert record["environment"]["timestamp"] == env["timestamp"]
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]  # no temporary file left
    again = common.write_result("ignored", {"environment": env, "rows": []}, out)
    assert json.loads(again.read_text())["environment"]["timestamp"] == env["timestamp"]


def test_command_line_names_the_script():
    assert (common.command_line("/x/benchmarks/bench_sweep.py", ["--out", "a b"])
            == "python benchmarks/bench_sweep.py --out 'a b'")
