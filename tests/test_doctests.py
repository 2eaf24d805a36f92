"""The docstring examples of every module run and print what they say."""

import doctest
import importlib

import pytest

CORE = ["legs", "cuts", "network", "spectra", "truncate", "mps", "contract", "atlas"]
REST = ["models", "data", "train", "cli",
        "layers.base", "layers.mps", "layers.tucker", "layers.cp", "layers.convert",
        "layers.monitor",
        "study.truncation", "study.prefix", "study.sweep", "study.records", "study.retrain",
        "study.report", "study.plots", "study.experiment"]


@pytest.mark.parametrize("name", CORE + REST)
def test_docstring_examples(name):
    module = importlib.import_module(f"tnconv.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"tnconv.{name} has no examples"
    assert result.failed == 0
