"""Shared fixtures: small real Fashion-MNIST subsets and a throw-away tnconv cache."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def fmnist_train():
    """3000 Fashion-MNIST training images (fixed subset); skips when the data is absent."""
    from tnconv.data import load_dataset

    try:
        return load_dataset("fashion-mnist", "train").subset(3000, seed=0)
    except FileNotFoundError as exc:  # .ci/run installs dataset-fashion-mnist
        pytest.skip(f"Fashion-MNIST not available: {exc}")


@pytest.fixture(scope="session")
def fmnist_test():
    """1000 Fashion-MNIST test images (fixed subset); skips when the data is absent."""
    from tnconv.data import load_dataset

    try:
        return load_dataset("fashion-mnist", "test").subset(1000, seed=0)
    except FileNotFoundError as exc:
        pytest.skip(f"Fashion-MNIST not available: {exc}")


@pytest.fixture
def tnconv_cache(tmp_path, monkeypatch):
    """Point ``$TNCONV_CACHE`` at an empty temporary folder and return it."""
    cache = tmp_path / "tnconv-cache"
    monkeypatch.setenv("TNCONV_CACHE", str(cache))
    return cache
