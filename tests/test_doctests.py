"""The docstring examples of the core modules run and print what they say."""

import doctest
import importlib

import pytest

CORE = ["legs", "cuts", "network", "spectra", "truncate", "mps", "contract", "atlas"]


@pytest.mark.parametrize("name", CORE)
def test_docstring_examples(name):
    module = importlib.import_module(f"tnconv.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"tnconv.{name} has no examples"
    assert result.failed == 0
