"""Shared fixtures: small real Fashion-MNIST subsets and a throw-away tnconv cache.

Without Fashion-MNIST the real-data tests skip locally; under CI (``CI=true``) a missing
dataset fails the run instead, so a broken data install cannot pass CI by skipping them.
"""

from __future__ import annotations

import os

import pytest

_DATA_SKIP_WORDS = ("Fashion-MNIST not available", "dataset-fashion-mnist not installed")
_CI_MESSAGE = ("Fashion-MNIST is missing and CI=true: the real-data tests must run in CI. "
               "Install Debian's dataset-fashion-mnist (`make data`, which .ci/run runs) or "
               "put the files under /usr/share/datasets/fashion-mnist.")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _missing_data(exc: Exception) -> None:
    """Skip (locally) or fail (under CI=true) a test whose Fashion-MNIST is absent."""
    if _in_ci():
        pytest.fail(f"{_CI_MESSAGE}\n{exc}", pytrace=False)
    pytest.skip(f"Fashion-MNIST not available: {exc}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true, a skip because Fashion-MNIST is absent (any test's) is a failure."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and _in_ci() and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        if any(word in reason for word in _DATA_SKIP_WORDS):
            report.outcome = "failed"
            report.longrepr = f"{_CI_MESSAGE}\n({reason})"


@pytest.fixture(scope="session")
def fmnist_train():
    """3000 Fashion-MNIST training images (fixed subset); see the module docstring when absent."""
    from tnconv.data import load_dataset

    try:
        return load_dataset("fashion-mnist", "train").subset(3000, seed=0)
    except FileNotFoundError as exc:  # .ci/run installs dataset-fashion-mnist
        missing = exc
    _missing_data(missing)  # outside the except: the message alone, no chained traceback


@pytest.fixture(scope="session")
def fmnist_test():
    """1000 Fashion-MNIST test images (fixed subset); see the module docstring when absent."""
    from tnconv.data import load_dataset

    try:
        return load_dataset("fashion-mnist", "test").subset(1000, seed=0)
    except FileNotFoundError as exc:
        missing = exc
    _missing_data(missing)  # outside the except: the message alone, no chained traceback


@pytest.fixture
def tnconv_cache(tmp_path, monkeypatch):
    """Point ``$TNCONV_CACHE`` at an empty temporary folder and return it."""
    cache = tmp_path / "tnconv-cache"
    monkeypatch.setenv("TNCONV_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module of tiny tensors (``pytestmark =
    pytest.mark.usefixtures("one_thread")``): on a shared 2-core CPU, OpenMP contention made
    small convolutions and SVDs up to 100x slower with two threads."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_benchmark(name: str):
    """Import ``benchmarks/<name>.py`` (a script, not a package) as a module, for its tests."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    if name != "_common" and "_common" not in sys.modules:
        load_benchmark("_common")  # the scripts' sibling module (`import _common`)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
