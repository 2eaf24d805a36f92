"""The docstring examples of every module run and print what they say.

Every module of the package is collected (so a new module cannot be forgotten); each must have
at least one example, except the few listed in ``NO_EXAMPLES``.
"""

import doctest
import importlib
from pathlib import Path

import pytest

import tnconv

PACKAGE = Path(tnconv.__file__).resolve().parent
#: Modules without examples of their own: entry points and the version string.
NO_EXAMPLES = {"__main__", "_version"}
MODULES = sorted(
    ".".join(path.relative_to(PACKAGE).with_suffix("").parts[: -1 if path.stem == "__init__"
                                                             else None])
    for path in PACKAGE.rglob("*.py")
    if path.parent != PACKAGE or path.stem not in NO_EXAMPLES | {"__init__"}
)


def test_known_modules_are_collected():
    for name in ("decomp", "mps", "mps.chain", "mps.order", "layers.mps_conv2d", "study.sweep",
                 "cli", "cli.commands"):
        assert name in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"tnconv.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"tnconv.{name} has no examples"
    assert result.failed == 0
