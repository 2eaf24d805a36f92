"""How sure a depth trend is: Spearman correlation, permutation p-value, bootstrap interval.

The study's findings say whether compressibility grows with depth. With a handful of layers a
correlation of +0.4 means nothing, so the claim comes with its sample size, an exact (up to 8
layers) or Monte-Carlo permutation p-value and a bootstrap interval, all seeded: the same
table always gives the same numbers. ResNet layers are also grouped by stage (``layerN.*``).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["spearman", "depth_trend", "stage_of", "stage_summary"]

#: Significance level of the trend ("no clear trend" above it).
ALPHA = 0.05


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as ``scipy.stats.rankdata``)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = np.arange(len(x), dtype=float)
    for v in np.unique(x):
        same = x == v
        ranks[same] = ranks[same].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (NaN with fewer than 3 points or a constant side).

    Examples
    --------
    >>> spearman([0, 1, 2, 3], [1.0, 2.0, 2.0, 5.0])
    0.9486832980505139
    """
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) < 3:
        return math.nan
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def _permutation_p(x: np.ndarray, y: np.ndarray, rho: float, rng: np.random.Generator,
                   n_perm: int) -> float:
    """Two-sided p-value of ``|rho|`` under shuffled ``y`` (exact for up to 8 points)."""
    if len(y) <= 8:
        perms: Any = (np.array(p) for p in itertools.permutations(y))
        total = math.factorial(len(y))
    else:
        perms = (rng.permutation(y) for _ in range(n_perm))
        total = n_perm
    hits = 0
    for p in perms:
        r = spearman(x, p)
        hits += (not math.isnan(r)) and abs(r) >= abs(rho) - 1e-12
    exact = len(y) <= 8
    return hits / total if exact else (hits + 1) / (total + 1)


def depth_trend(depth: Sequence[float], value: Sequence[float], *, n_boot: int = 2000,
                n_perm: int = 5000, seed: int = 0) -> dict[str, Any]:
    """Spearman correlation of ``value`` with ``depth``, its significance and 95% interval.

    Returns
    -------
    dict
        ``n``, ``spearman``, ``p_value`` (two-sided permutation test), ``ci`` (bootstrap 95%
        percentile interval over resampled layers, ``None`` when undefined) and ``verdict``:
        ``"grows"``, ``"shrinks"`` (p < 0.05) or ``"no clear trend"``.

    Examples
    --------
    >>> t = depth_trend([0, 1, 2, 3], [0.1, 0.3, 0.2, 0.25])
    >>> t["n"], round(t["spearman"], 2), t["verdict"]
    (4, 0.4, 'no clear trend')
    """
    x, y = np.asarray(depth, dtype=float), np.asarray(value, dtype=float)
    rho = spearman(x, y)
    out: dict[str, Any] = {"n": int(len(x)), "spearman": rho, "p_value": None, "ci": None,
                           "verdict": "no clear trend"}
    if math.isnan(rho):
        return out
    rng = np.random.default_rng(seed)
    p = _permutation_p(x, y, rho, rng, n_perm)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(x), len(x))
        r = spearman(x[idx], y[idx])
        if not math.isnan(r):
            boots.append(r)
    if len(boots) >= n_boot // 2:
        out["ci"] = [float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))]
    out["p_value"] = float(p)
    if p < ALPHA:
        out["verdict"] = "grows" if rho > 0 else "shrinks"
    return out


def stage_of(layer: str) -> str | None:
    """The ResNet stage of a layer name (``"layer2.0.conv1"`` -> ``"layer2"``), else None.

    Examples
    --------
    >>> stage_of("layer3.1.conv2"), stage_of("block2.conv")
    ('layer3', None)
    """
    m = re.match(r"(layer\d+)\.", layer)
    return m.group(1) if m else None


def stage_summary(layers: Sequence[dict[str, Any]], key: str = "mean_safe_norm_loss"
                  ) -> list[dict[str, Any]]:
    """Per ResNet stage (``stem`` before the first): layer count, mean and range of ``key``.

    Empty when no layer is named ``layerN.*`` (not a ResNet).
    """
    if not any(stage_of(r["layer"]) for r in layers):
        return []
    groups: dict[str, list[float]] = {}
    for r in sorted(layers, key=lambda r: r["index"]):
        name = stage_of(r["layer"]) or ("stem" if not groups or list(groups) == ["stem"]
                                        else "head")
        groups.setdefault(name, []).append(float(r[key]))
    return [{"stage": s, "layers": len(v), "mean": float(np.mean(v)), "min": float(min(v)),
             "max": float(max(v))} for s, v in groups.items()]
