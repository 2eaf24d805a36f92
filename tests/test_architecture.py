"""The package's layout rules (docs/architecture.md), checked on the source itself.

* no function or method longer than 80 lines (its docstring not counted), no module longer
  than 500 lines;
* no module imports another module's private name (``from .x import _name``);
* the core modules import nothing from the layers, the study, training, checkpoints, data,
  models or the CLI (data flows one way: arrays -> labels -> modules -> experiments);
* no two files of the package share a base name;
* every name of ``tnconv.__all__`` is importable from ``tnconv``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tnconv

PACKAGE = Path(tnconv.__file__).resolve().parent
FILES = sorted(PACKAGE.rglob("*.py"))
CORE = ("decomp", "legs", "cuts", "network", "spectra", "truncate", "factors", "mps", "mps_ranks",
        "mps_sweeps", "chains", "tucker", "cp", "contract", "atlas", "modules", "records",
        "runtime", "_version")
UPPER = ("layers", "study", "compression", "train", "checkpoints", "data", "models",
         "cifar_resnets", "cli", "cli_base", "cli_compress", "inputs")
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500


def _rel(path: Path) -> str:
    return str(path.relative_to(PACKAGE)) if path.is_relative_to(PACKAGE) else path.name


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _function_lengths(path: Path) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            doc = node.body[0] if node.body else None
            if (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
                    and isinstance(doc.value.value, str)):
                length -= doc.end_lineno - doc.lineno + 1
            out.append((f"{_rel(path)}:{node.lineno} {node.name}", length))
    return out


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) of every package-relative or tnconv import."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    pkg = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    out = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.split(".")[0] == "tnconv":
                mod = ".".join(node.module.split(".")[1:])
            else:
                continue
            out.append((mod, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "tnconv":
                    out.append((".".join(a.name.split(".")[1:]), []))
    return out


def test_no_long_functions():
    long = [(where, n) for p in FILES for where, n in _function_lengths(p)
            if n > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_no_long_modules():
    sizes = [(_rel(p), len(p.read_text().splitlines())) for p in FILES]
    long = [(name, n) for name, n in sizes if n > MAX_MODULE_LINES]
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_private_imports_across_modules():
    bad = [(_rel(p), mod, name) for p in FILES for mod, names in _imports(p) for name in names
           if name.startswith("_") and not name.startswith("__")]
    assert not bad, f"private names imported from other modules: {bad}"


@pytest.mark.parametrize("core", CORE)
def test_core_imports_nothing_above_it(core):
    path = PACKAGE / f"{core}.py"
    if not path.is_file():
        pytest.skip(f"tnconv/{core}.py does not exist")
    bad = [mod for mod, _ in _imports(path) if mod.split(".")[0] in UPPER]
    assert not bad, f"core module {core}.py imports {bad}"


def test_no_two_files_share_a_base_name():
    names: dict[str, list[str]] = {}
    for p in FILES:
        if p.name != "__init__.py":
            names.setdefault(p.stem, []).append(_rel(p))
    assert not {k: v for k, v in names.items() if len(v) > 1}


def test_every_public_name_is_importable():
    missing = [n for n in tnconv.__all__ if getattr(tnconv, n, None) is None]
    assert not missing


def test_the_rules_can_fail(tmp_path):
    """The checks see what they claim to see: a planted long function, private import and
    upward import are all reported."""
    f = tmp_path / "planted.py"
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    f.write_text(f'def f():\n    """Doc."""\n{body}\n')
    assert _function_lengths(f)[0][1] > MAX_FUNCTION_LINES
    g = PACKAGE / "_planted_for_test.py"
    try:
        g.write_text("from .train import _private\nfrom ..x import y\nimport tnconv.study\n")
        mods = _imports(g)
        assert ("train", ["_private"]) in mods and ("study", []) in mods
    finally:
        g.unlink()
