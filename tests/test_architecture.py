"""The package's layout rules (docs/architecture.md), checked on the source itself.

* no function or method longer than 80 lines (its docstring not counted), no module longer
  than 500 lines;
* no module imports another module's private name (``from .x import _name``);
* **no import cycle** between modules, lazy (function-level) imports included;
* **tiers follow the package layout**: every top-level module or subpackage of ``tnconv`` has
  one tier in :data:`TIERS`, and nothing imports a higher tier (data flows one way: leaves ->
  arrays -> labels -> models -> shared evaluation -> experiments -> commands); the
  experiment packages (``study``, ``compression``) do not import each other;
* no two files of the package share a base name;
* every name of ``tnconv.__all__`` is importable from ``tnconv``.

Every rule is computed by a function that takes the package folder, and
:func:`test_the_rules_can_fail` runs each one on a small planted package that breaks it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tnconv

PACKAGE = Path(tnconv.__file__).resolve().parent
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500

#: The tier of every top-level module and subpackage of tnconv (its first dotted part): a
#: module may import its own tier and the ones below, never a higher one.
TIERS: dict[str, int] = {
    # 0 leaves: import nothing of the package
    "_version": 0, "runtime": 0, "registry": 0, "records": 0, "sizes": 0,
    # 1 arrays: no labels
    "decomp": 1, "vbmf": 1,
    # 2 labels: legs, cuts, networks, spectra, the decompositions, contraction, layers of a model
    "legs": 2, "cuts": 2, "network": 2, "spectra": 2, "truncation": 2, "factors": 2, "mps": 2,
    "tucker": 2, "cp": 2, "contraction": 2, "hyper_contraction": 2, "model_layers": 2,
    "atlas": 2,
    # 3 models: nn.Modules, models, data, training, checkpoints
    "layers": 3, "models": 3, "cifar_resnets": 3, "data": 3, "train": 3, "checkpoints": 3,
    "distillation": 3,
    # 4 what the experiments share: trained models on demand, repeated evaluation, the
    # inference form
    "pretrained": 4, "evaluation": 4, "inference": 4,
    # 5 experiments; and the exports of the inference form (ONNX, torch.export), which load
    # checkpoints of either
    "study": 5, "compression": 5, "export": 5,
    # 6 commands
    "cli": 6, "__main__": 6,
}
#: Packages of one tier that must not import each other.
INDEPENDENT = (("study", "compression"),)


def _files(package: Path) -> list[Path]:
    return sorted(package.rglob("*.py"))


def _rel(path: Path, package: Path = PACKAGE) -> str:
    return str(path.relative_to(package)) if path.is_relative_to(package) else path.name


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


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


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (never run, so never a cycle)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out.update(id(n) for b in node.body for n in ast.walk(b))
    return out


def _imports(path: Path, package: Path = PACKAGE, *, root: str = "tnconv"
             ) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) of every package-relative or absolute import,
    function-level (lazy) imports included, ``if TYPE_CHECKING:`` blocks excluded."""
    parts = list(path.relative_to(package).with_suffix("").parts)
    pkg = parts[:-1]
    tree = _tree(path)
    skip = _type_checking_nodes(tree)
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.split(".")[0] == root:
                mod = ".".join(node.module.split(".")[1:])
            else:
                continue
            out.append((mod, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == root:
                    out.append((".".join(a.name.split(".")[1:]), []))
    return out


def import_graph(package: Path, *, root: str = "tnconv") -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from .x import name`` counts as an
    import of ``x.name`` when that is a module, else of ``x``)."""
    modules = {_module_name(p, package): p for p in _files(package)}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for mod, names in _imports(path, package, root=root):
            targets = [f"{mod}.{n}" if mod else n for n in names] or [mod]
            for t in targets:
                dep = t if t in modules else mod
                if dep in modules and dep != name:
                    deps.add(dep)
        graph[name] = deps
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def tier_violations(graph: dict[str, set[str]], tiers: dict[str, int],
                    independent: tuple[tuple[str, ...], ...] = ()) -> list[str]:
    """Imports of a higher tier, or between independent packages, as readable strings."""
    bad = []
    for mod, deps in graph.items():
        top = mod.split(".")[0]
        if not mod:  # the package's own __init__: the API facade, above everything
            continue
        for dep in deps:
            other = dep.split(".")[0]
            if not dep:
                bad.append(f"{mod} imports the package's __init__")
            elif tiers[other] > tiers[top]:
                bad.append(f"{mod} (tier {tiers[top]}) imports {dep} (tier {tiers[other]})")
            elif any(top in g and other in g and top != other for g in independent):
                bad.append(f"{mod} imports {dep} (independent packages)")
    return sorted(bad)


def _top_level_names(package: Path) -> set[str]:
    return {_module_name(p, package).split(".")[0] for p in _files(package)} - {""}


def test_no_long_functions():
    long = [(where, n) for p in _files(PACKAGE) for where, n in _function_lengths(p)
            if n > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_no_long_modules():
    sizes = [(_rel(p), len(p.read_text().splitlines())) for p in _files(PACKAGE)]
    long = [(name, n) for name, n in sizes if n > MAX_MODULE_LINES]
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_private_imports_across_modules():
    bad = [(_rel(p), mod, name) for p in _files(PACKAGE) for mod, names in _imports(p)
           for name in names if name.startswith("_") and not name.startswith("__")]
    assert not bad, f"private names imported from other modules: {bad}"


def test_no_import_cycles():
    cycles = import_cycles(import_graph(PACKAGE))
    assert not cycles, f"import cycles (lazy imports included): {cycles}"


def test_every_top_level_module_has_a_tier():
    assert _top_level_names(PACKAGE) == set(TIERS), (
        f"untiered: {sorted(_top_level_names(PACKAGE) - set(TIERS))}, "
        f"gone: {sorted(set(TIERS) - _top_level_names(PACKAGE))}")


def test_nothing_imports_upward():
    bad = tier_violations(import_graph(PACKAGE), TIERS, INDEPENDENT)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("family", ["mps", "cli", "evaluation"])
def test_families_are_packages(family):
    assert (PACKAGE / family / "__init__.py").is_file()
    assert not (PACKAGE / f"{family}.py").exists()


def test_no_function_shadows_its_module():
    """``import tnconv.x as m`` gives the module: no public name of tnconv is also the name of
    one of its modules (``tnconv.truncate`` is the function, ``tnconv.truncation`` the module)."""
    clash = sorted(set(tnconv.__all__) & _top_level_names(PACKAGE))
    assert not clash


def test_no_two_files_share_a_base_name():
    names: dict[str, list[str]] = {}
    for p in _files(PACKAGE):
        if p.name != "__init__.py":
            names.setdefault(p.stem, []).append(_rel(p))
    assert not {k: v for k, v in names.items() if len(v) > 1}


def test_every_public_name_is_importable():
    missing = [n for n in tnconv.__all__ if getattr(tnconv, n, None) is None]
    assert not missing


def _planted_package(tmp_path: Path) -> Path:
    pkg = tmp_path / "planted"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    (pkg / "long.py").write_text(f'def f():\n    """Doc."""\n{body}\n')
    (pkg / "low.py").write_text("def f():\n    from .sub import high  # lazy, and upward\n")
    (pkg / "sub" / "high.py").write_text("from ..low import f\nfrom ..long import _private\n"
                                         "import planted.low\n")
    return pkg


def test_the_rules_can_fail(tmp_path):
    """Each check reports a planted violation: a long function, a private import, a lazy
    import cycle and an upward import."""
    pkg = _planted_package(tmp_path)
    assert _function_lengths(pkg / "long.py")[0][1] > MAX_FUNCTION_LINES
    mods = _imports(pkg / "sub" / "high.py", pkg, root="planted")
    assert ("long", ["_private"]) in mods and ("low", []) in mods
    graph = import_graph(pkg, root="planted")
    assert graph["low"] == {"sub.high"} and "low" in graph["sub.high"]
    assert import_cycles(graph) == [["low", "sub.high"]]
    assert tier_violations(graph, {"low": 0, "long": 0, "sub": 1}) == [
        "low (tier 0) imports sub.high (tier 1)"]
    assert tier_violations(graph, {"low": 1, "long": 1, "sub": 1}, (("low", "sub"),))
