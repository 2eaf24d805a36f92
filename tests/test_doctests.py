"""The docstring examples of every module run and print what they say."""

import doctest
import importlib

import pytest

CORE = ["decomp", "legs", "cuts", "network", "spectra", "truncate", "factors", "mps", "tucker",
        "cp", "contract", "modules",
        "records", "runtime", "registry", "atlas"]
REST = ["models", "cifar_resnets", "data", "data.catalog", "data.images", "data.sources",
        "data.loaders",
        "data.folders", "inputs", "train", "checkpoints",
        "cli", "study.profiles",
        "layers.base", "layers.mps_conv2d", "layers.tucker_conv2d", "layers.cp_conv2d",
        "layers.convert",
        "layers.monitor",
        "study.model_truncation", "study.prefix", "study.sweep", "study.retrain",
        "study.report", "study.plots", "study.experiment", "study.distributed",
        "study.atlas_many", "study.model_comparison"]


@pytest.mark.parametrize("name", CORE + REST)
def test_docstring_examples(name):
    module = importlib.import_module(f"tnconv.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"tnconv.{name} has no examples"
    assert result.failed == 0
