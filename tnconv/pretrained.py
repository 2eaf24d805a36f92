"""Trained models on demand: :func:`train_or_load` gives a model trained on a dataset, from
the checkpoint cache or trained now.

It sits above both :mod:`tnconv.train` (what trains and evaluates) and
:mod:`tnconv.checkpoints` (what saves and loads), which import neither it nor each other.
The cache folder is :func:`tnconv.runtime.cache_dir` (``$TNCONV_CACHE``, default
``~/.cache/tnconv``); checkpoints are keyed by the model, the dataset and a hash of the
training options (:func:`tnconv.checkpoints.default_checkpoint_path`).

Examples
--------
>>> from tnconv.pretrained import train_or_load
>>> model, meta = train_or_load("cnn4", "fashion-mnist", epochs=1, train_subset=64,
...                             test_subset=64, cache=False, progress=False, device="cpu")
>>> meta["train_images"], meta["test_images"], type(model).__name__
(64, 64, 'CNN4')
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoints import (
    check_writable,
    default_checkpoint_path,
    load_checkpoint,
    save_checkpoint,
    to_plain,
)
from .data import canonical_name, load_dataset
from .models import get_model
from .runtime import resolve_device
from .train import evaluate, fit, train_config

__all__ = ["train_or_load"]


def train_or_load(
    model_name: str,
    dataset: str,
    *,
    epochs: int | None = None,
    device: str | torch.device | None = None,
    cache: bool = True,
    path: str | os.PathLike | None = None,
    force: bool = False,
    train_subset: int | None = None,
    test_subset: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    progress: bool = True,
    root: str | os.PathLike | None = None,
    download: bool = False,
    **overrides: Any,
) -> tuple[nn.Module, dict[str, Any]]:
    """A trained ``model_name`` for ``dataset``: from the checkpoint cache, or trained now.

    Looks for the checkpoint at ``path`` (when ``cache`` and not ``force``); uses it if its
    metadata matches (model, dataset and, when given, ``epochs``, ``train_subset``,
    ``model_kwargs`` and every option in ``overrides``, compared with the checkpoint's
    ``train_config``). Otherwise trains with :func:`tnconv.train.train_config`'s defaults
    (``overrides`` replace single options, e.g. ``lr=0.05``), evaluates on the test split, and
    saves the checkpoint there (when ``cache``).

    Parameters
    ----------
    model_name : str
        A :func:`tnconv.models.get_model` name.
    dataset : str
        A :func:`tnconv.data.load_dataset` name.
    epochs : int, optional
        Training epochs; default from :data:`tnconv.train.TRAIN_DEFAULTS`.
    device : str or torch.device, optional
        Default ``"auto"`` (CUDA when available).
    cache : bool, default True
        Read and write the checkpoint at ``path``.
    path : path, optional
        The checkpoint; default :func:`default_checkpoint_path` of the model and dataset.
    force : bool, default False
        Train even when a usable checkpoint is at ``path`` (and replace it when ``cache``).
    train_subset, test_subset : int, optional
        Train on / evaluate on a fixed random subset of that many images (seeded by ``seed``).
    model_kwargs : dict, optional
        Passed to :func:`tnconv.models.get_model` (stored in the metadata, so
        :func:`load_checkpoint` rebuilds the same model).
    seed : int, default 0
        Seeds the model initialisation, the subsets and training.
    progress : bool, default True
        Progress bars and a line saying what is trained.
    root : path, optional
        Data folder searched first by :func:`tnconv.data.load_dataset`.
    download : bool, default False
        Let :func:`tnconv.data.load_dataset` download a dataset found nowhere.
    **overrides
        Training options of :func:`tnconv.train.fit` (``lr``, ``batch_size``, ...).

    Returns
    -------
    (model, meta)
        The model on ``device`` in eval mode, and its metadata (``accuracy`` is test accuracy).

    Examples
    --------
    >>> model, meta = train_or_load("cnn4", "fashion-mnist")  # doctest: +SKIP
    >>> meta["accuracy"] > 0.91  # doctest: +SKIP
    True
    """
    dev = resolve_device(device)
    name = canonical_name(dataset)
    model_key = model_name.strip().lower()
    path = Path(path).expanduser() if path is not None else default_checkpoint_path(model_key,
                                                                                     name)
    kwargs = to_plain(dict(model_kwargs or {}))
    if cache:
        check_writable(path)  # before training, so that a trained model is never lost
    if cache and not force and path.is_file():
        expect: dict[str, Any] = {"model": model_key, "dataset": name}
        for key, value in (("epochs", epochs), ("train_images", train_subset),
                           ("model_kwargs", kwargs or None)):
            if value is not None:
                expect[key] = value
        found = _load_matching(path, expect, overrides, dev, progress)
        if found is not None:
            return found
    model, meta = _train_now(model_key, name, dev, epochs=epochs, train_subset=train_subset,
                             test_subset=test_subset, model_kwargs=kwargs, seed=seed,
                             progress=progress, root=root, download=download,
                             overrides=overrides)
    if cache:
        save_checkpoint(model, path, meta=meta)
    return model, meta


def _load_matching(path: Path, expect: dict[str, Any], overrides: dict[str, Any],
                   device: torch.device, progress: bool
                   ) -> tuple[nn.Module, dict[str, Any]] | None:
    """The checkpoint at ``path`` if it matches ``expect`` and ``overrides``, else None."""
    try:
        model, meta = load_checkpoint(path, expect=expect, map_location=device)
        trained = meta.get("train_config")
        trained = trained if isinstance(trained, dict) else {}
        for key, want in overrides.items():
            if key not in trained or trained[key] != to_plain(want):
                raise ValueError(
                    f"{path} was trained with {key}={trained.get(key)!r}, not {key}={want!r}"
                )
        return model, meta
    except ValueError as exc:
        if progress:
            print(f"tnconv: retraining, cached checkpoint not usable: {exc}")
    return None


def _train_now(model_key: str, name: str, dev: torch.device, *, epochs: int | None,
               train_subset: int | None, test_subset: int | None, model_kwargs: dict[str, Any],
               seed: int, progress: bool, root: str | os.PathLike | None, download: bool,
               overrides: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``model_key`` on ``name`` with the defaults and ``overrides``; evaluate it."""
    config = train_config(model_key, name, dev)
    config.update(overrides)
    if epochs is not None:
        config["epochs"] = epochs
    train = load_dataset(name, "train", root=root, download=download)
    test = load_dataset(name, "test", root=root, download=download)
    if train_subset is not None and train_subset < len(train):
        train = train.subset(train_subset, seed=seed)
    if test_subset is not None and test_subset < len(test):
        test = test.subset(test_subset, seed=seed)
    torch.manual_seed(seed)
    model = get_model(model_key, train.num_classes, train.in_channels, **model_kwargs)
    if progress:
        print(f"tnconv: training {model_key} on {name} ({len(train)} images) on {dev}: "
              + ", ".join(f"{k}={v}" for k, v in config.items()))
    start = time.perf_counter()
    history = fit(model, train, device=dev, seed=seed, progress=progress, **config)
    seconds = time.perf_counter() - start
    result = evaluate(model, test, device=dev)
    meta = {
        "model": model_key, "dataset": name, "num_classes": train.num_classes,
        "in_channels": train.in_channels, "accuracy": result["accuracy"],
        "test_loss": result["loss"], "epochs": config["epochs"], "train_config": config,
        "seed": seed, "device": str(dev), "train_images": len(train),
        "test_images": len(test), "train_seconds": seconds, "history": history,
    }
    if model_kwargs:
        meta["model_kwargs"] = model_kwargs
    if "top5" in result:
        meta["top5"] = result["top5"]
    return model, meta
