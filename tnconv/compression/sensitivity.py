"""Per-layer sensitivity: a cached single-layer sweep, read as accuracy drop per error.

:func:`sensitivity_rows` runs :func:`tnconv.sweep` (``mode="single"``, ``criterion="keep"``)
on each layer's chosen cut, one sweep per distinct cut, and keeps the rows as JSONL under
``runtime.cache_dir("compress")``, in a file named by a hash of the sweep's fingerprint (model
weights, data, cut, layers, levels; :mod:`tnconv.study.fingerprint`). A finished file is read
back without evaluating anything; an interrupted one is resumed by the sweep itself.

:class:`DropCurve` turns one layer's rows into a function ``error -> predicted accuracy
drop``: the measured drops (negative ones clipped to 0) made non-decreasing in the error,
interpolated linearly, from ``(0, 0)`` up to ``(1, baseline accuracy)`` (a zero kernel is
assumed to lose everything). The drop is a function of the kernel's relative error so that
one sweep, on one cut, predicts the drop of every option of the layer (other cuts, Tucker,
MPS): an approximation, said so in :func:`tnconv.compress`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..records import RowLog
from ..runtime import cache_dir

__all__ = ["SENSITIVITY_LEVELS", "DropCurve", "sensitivity_rows", "drop_curves"]

#: Kept fractions of the singular values swept per layer (``criterion="keep"``).
SENSITIVITY_LEVELS: tuple[float, ...] = (1.0, 0.6, 0.4, 0.3, 0.2, 0.14, 0.1, 0.06, 0.03)


class DropCurve:
    """Predicted accuracy drop of one layer as a function of its kernel's relative error.

    Examples
    --------
    >>> curve = DropCurve([0.1, 0.5], [0.0, 0.2], baseline=0.9)
    >>> round(curve(0.3), 3), round(curve(0.0), 3), round(curve(1.0), 3)
    (0.1, 0.0, 0.9)
    """

    def __init__(self, errors: Sequence[float], drops: Sequence[float], *,
                 baseline: float) -> None:
        pts = sorted(zip(map(float, errors), (max(float(d), 0.0) for d in drops)))
        xs, ys = [0.0], [0.0]
        for e, d in pts:
            if e <= xs[-1]:
                ys[-1] = max(ys[-1], d)
                continue
            xs.append(e)
            ys.append(max(ys[-1], d))
        if xs[-1] < 1.0:
            xs.append(1.0)
            ys.append(max(ys[-1], float(baseline)))
        self.errors, self.drops = np.array(xs), np.array(ys)

    def __call__(self, error: float) -> float:
        return float(np.interp(error, self.errors, self.drops))


def _cache_path(model: nn.Module, data: Any, cut: str, layers: Sequence[str],
                levels: Sequence[float]) -> Path:
    from ..study.fingerprint import sweep_fingerprint

    fp = sweep_fingerprint(model, data, cuts=[cut], levels=levels, criterion="keep")
    fp["layers"] = sorted(layers)
    key = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir("compress") / f"sensitivity-{key}.jsonl"


def sensitivity_rows(model: nn.Module, data: Any, cuts: dict[str, str], *,
                     levels: Sequence[float] = SENSITIVITY_LEVELS, cache: bool = True,
                     device: Any = None, progress: bool = True) -> list[dict[str, Any]]:
    """Single-layer sweep rows of ``model`` on ``data``, each layer on its own cut.

    Parameters
    ----------
    model
        The dense model (not modified).
    data
        Evaluation data, any form of :mod:`tnconv.data.loaders`.
    cuts
        ``{layer name: cut}``.
    levels
        Kept fractions (``criterion="keep"``).
    cache
        Keep (and reuse) the rows under ``runtime.cache_dir("compress")``.
    device, progress
        As :func:`tnconv.sweep`.

    Returns
    -------
    list of dict
        The sweep's rows (:data:`tnconv.study.sweep.SWEEP_FIELDS`).
    """
    from ..study.sweep import SWEEP_FIELDS, sweep

    by_cut: dict[str, list[str]] = {}
    for name, cut in cuts.items():
        by_cut.setdefault(cut, []).append(name)
    rows: list[dict[str, Any]] = []
    for cut, names in by_cut.items():
        out = _cache_path(model, data, cut, names, levels) if cache else None
        done = None if out is None else out.with_name(out.name + ".complete")
        if done is not None and done.is_file() and out.is_file():  # type: ignore[union-attr]
            rows += RowLog(out, SWEEP_FIELDS).read()  # type: ignore[arg-type]
            continue
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
        rows += list(sweep(model, data, layers=names, cuts=[cut], levels=list(levels),
                           criterion="keep", mode="single", out=out, device=device,
                           progress=progress))
        if done is not None:
            done.write_text("complete\n")
    return rows


def drop_curves(rows: Sequence[dict[str, Any]]) -> dict[str, DropCurve]:
    """One :class:`DropCurve` per layer of single-layer sweep rows.

    Examples
    --------
    >>> rows = [{"layer": "a", "rel_error": 0.2, "accuracy_drop": 0.05,
    ...          "baseline_accuracy": 0.9}]
    >>> round(drop_curves(rows)["a"](0.1), 3)
    0.025
    """
    grouped: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        grouped.setdefault(str(r["layer"]), []).append(r)
    return {name: DropCurve([float(r["rel_error"]) for r in rs],
                            [float(r["accuracy_drop"]) for r in rs],
                            baseline=float(rs[0]["baseline_accuracy"]))
            for name, rs in grouped.items()}
