"""Saving and loading compressed models through the ordinary checkpoints.

:func:`tnconv.save_checkpoint` stores the factorized layers' specs
(:func:`tnconv.layers.factorized_specs`: kind, chain, forward path) with the dense
architecture's name, and :func:`tnconv.load_checkpoint` rebuilds them in the dense model
(:func:`tnconv.layers.refactorize`) before loading the weights, whose shapes give the ranks.
:func:`save_compressed` adds the :class:`CompressReport` to the metadata;
:func:`load_compressed` returns the model, its metadata and the report.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .summary import CompressReport, LayerResult

__all__ = ["save_compressed", "load_compressed"]


def save_compressed(model: nn.Module, path: str | os.PathLike, *, meta: dict[str, Any],
                    report: CompressReport | None = None) -> Path:
    """Save a compressed model with :func:`tnconv.save_checkpoint`, and its report.

    Parameters
    ----------
    model
        The compressed model (from :func:`tnconv.compress`).
    path
        The checkpoint file.
    meta
        As :func:`tnconv.save_checkpoint`: must name the dense architecture (``"model"``: a
        :func:`tnconv.get_model` name; ``model_kwargs`` when needed).
    report
        Kept in the metadata as ``"compress_report"`` (:meth:`CompressReport.to_dict`).

    Returns
    -------
    Path
        The checkpoint's path.
    """
    from ..checkpoints import save_checkpoint

    full = dict(meta)
    if report is not None:
        full["compress_report"] = report.to_dict()
    return save_checkpoint(model, path, meta=full)


def _report(data: dict[str, Any] | None) -> CompressReport | None:
    """The report of a saved :meth:`CompressReport.to_dict`; derived totals
    (``params_fraction``, ``compression_ratio``, ...) and keys unknown to this version are
    dropped, so reports saved by older versions load too."""
    if not data:
        return None
    fields = set(CompressReport.__dataclass_fields__)
    kept = {k: v for k, v in data.items() if k in fields and k != "layers"}
    if kept.get("input_size"):
        kept["input_size"] = tuple(kept["input_size"])
    row_fields = set(LayerResult.__dataclass_fields__)
    layers = [LayerResult(**{**{k: v for k, v in r.items() if k in row_fields},
                             "ranks": tuple(r["ranks"])}) for r in data.get("layers", [])]
    return CompressReport(layers=layers, **kept)


def load_compressed(path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
                    ) -> tuple[nn.Module, dict[str, Any], CompressReport | None]:
    """Load a checkpoint of :func:`save_compressed` with :func:`tnconv.load_checkpoint`.

    Returns
    -------
    (model, meta, report)
        The factored model in eval mode on ``map_location``, the metadata and the
        :class:`CompressReport` saved with it (``None`` when there was none).

    Examples
    --------
    >>> import os, tempfile, tnconv
    >>> path = os.path.join(tempfile.mkdtemp(), "m.pt")
    >>> _ = save_compressed(tnconv.cnn4(10, 1), path, meta={"model": "cnn4"},
    ...                     report=CompressReport(budget=0.5))
    >>> model, meta, report = load_compressed(path)
    >>> type(model).__name__, report.budget
    ('CNN4', 0.5)
    """
    from ..checkpoints import load_checkpoint

    model, meta = load_checkpoint(path, map_location=map_location)
    return model, meta, _report(meta.get("compress_report"))
