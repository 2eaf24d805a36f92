"""Spectra atlases of many models in one table: :func:`spectra_atlas_many`.

The study's question asked of many models at once: every checkpoint of a training run, a model
zoo, torchvision's classifiers. Each model gives the rows of :func:`tnconv.spectra_atlas`; the
table adds ``model`` (its label) and ``depth`` (the layer's relative depth, 0 for the first conv
layer and 1 for the last), so models of different depths can be compared
(:func:`tnconv.study.model_comparison.plot_entropy_by_depth`).

The models run one after another here, or as one Ray task each (``executor="ray"``): a task
loads its model from its name or checkpoint in the worker (checkpoint paths must be readable on
every node, e.g. a shared file system); models given as modules go through the object store.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atlas import spectra_atlas
from ..records import Records

__all__ = ["spectra_atlas_many", "load_any_model", "ATLAS_EXECUTORS"]

#: Valid ``executor`` values of :func:`spectra_atlas_many`.
ATLAS_EXECUTORS = ("local", "ray")

ModelSource = nn.Module | str | os.PathLike


def load_any_model(source: ModelSource, *, weights: Any = None) -> nn.Module:
    """A model from a module (returned as is), a checkpoint file or a model name.

    A path ending in ``.pt`` or naming an existing file is a checkpoint
    (:func:`tnconv.load_checkpoint`); anything else is a name for :func:`tnconv.get_model`
    (``weights`` passed through, e.g. ``"DEFAULT"`` for torchvision's pretrained weights).

    Examples
    --------
    >>> type(load_any_model("cnn4")).__name__
    'CNN4'
    """
    if isinstance(source, nn.Module):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"a model must be an nn.Module, a checkpoint path or a model name, got "
                        f"{type(source).__name__}")
    path = Path(source).expanduser()
    if path.suffix == ".pt" or path.is_file():
        from ..checkpoints import load_checkpoint

        return load_checkpoint(path)[0]
    from ..models import get_model

    return get_model(str(source), weights=weights)


def _labelled(models: Any) -> list[tuple[str, Any]]:
    if isinstance(models, Mapping):
        items = [(str(k), v) for k, v in models.items()]
    elif isinstance(models, Sequence) and not isinstance(models, (str, bytes)):
        items = [(str(m) if isinstance(m, (str, os.PathLike)) else f"{type(m).__name__}[{i}]", m)
                 for i, m in enumerate(models)]
    else:
        raise TypeError("models must be a list of modules, checkpoint paths or model names, or "
                        f"a mapping label -> one of them; got {type(models).__name__}")
    if not items:
        raise ValueError("models is empty: give at least one model")
    labels = [k for k, _ in items]
    if len(set(labels)) != len(labels):
        raise ValueError(f"model labels must be distinct, got {labels}; pass a mapping "
                         "label -> model")
    return items


def atlas_rows(label: str, source: ModelSource, cuts: Any, opts: dict[str, Any]
               ) -> list[dict[str, Any]]:
    """The atlas rows of one model with its ``model`` label and relative ``depth`` (a Ray
    task, or called here)."""
    torch.set_num_threads(opts.get("threads") or torch.get_num_threads())
    model = load_any_model(source, weights=opts["weights"])
    rows = spectra_atlas(model, cuts, include_linear=opts["include_linear"], dtype=opts["dtype"])
    last = max(r["index"] for r in rows)
    return [{"model": label, **r, "depth": r["index"] / last if last else 0.0} for r in rows]


def spectra_atlas_many(
    models: Sequence[ModelSource] | Mapping[str, ModelSource],
    cuts: str | Sequence[str] = "all",
    *,
    weights: Any = None,
    include_linear: bool = False,
    dtype: torch.dtype | None = None,
    executor: str = "local",
    ray_address: str | None = None,
) -> Records:
    """:func:`tnconv.spectra_atlas` of many models, as one table with a ``model`` column.

    Parameters
    ----------
    models
        Modules, checkpoint paths or model names (see :func:`load_any_model`), or a mapping
        ``label -> model``. Labels: the mapping's keys, else the path or name, else
        ``ClassName[i]``.
    cuts
        ``"all"`` or cut strings, as in :func:`tnconv.spectra_atlas`.
    weights
        For model names: torchvision's weights (``"DEFAULT"``); default random weights.
    include_linear, dtype
        As in :func:`tnconv.spectra_atlas`.
    executor
        ``"local"`` or ``"ray"`` (one task per model; ``pip install "tnconv[ray]"``).
    ray_address
        The Ray cluster (default ``RAY_ADDRESS``, else a local instance).

    Returns
    -------
    Records
        The rows of each model in order: ``model``, the atlas columns, ``depth``.

    Examples
    --------
    >>> import torch, tnconv
    >>> rows = spectra_atlas_many({"a": torch.nn.Conv2d(2, 4, 3), "b": "cnn4"},
    ...                           ["out|in,kh,kw"])
    >>> sorted({r["model"] for r in rows}), rows[-1]["depth"]
    (['a', 'b'], 1.0)
    """
    if executor not in ATLAS_EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; valid: {', '.join(ATLAS_EXECUTORS)}")
    items = _labelled(models)
    opts = {"weights": weights, "include_linear": include_linear, "dtype": dtype}
    if executor == "local":
        return Records(r for label, m in items for r in atlas_rows(label, m, cuts, opts))
    from .distributed import connect

    ray, started = connect(ray_address)
    try:
        task = ray.remote(atlas_rows).options(num_cpus=1, max_retries=3)
        refs = [task.remote(label, ray.put(m) if isinstance(m, nn.Module) else m, cuts,
                            {**opts, "threads": 1}) for label, m in items]
        return Records(r for rows in ray.get(refs) for r in rows)
    finally:
        if started:
            ray.shutdown()
