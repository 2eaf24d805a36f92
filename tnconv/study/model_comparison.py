"""Comparing models: entanglement entropy by relative depth, one panel per cut.

Takes the table of :func:`tnconv.study.atlas_many.spectra_atlas_many` (columns ``model``,
``cut``, ``depth``, ``entropy``, ``full_rank``). matplotlib is imported inside the functions,
with the non-interactive Agg backend.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

__all__ = ["entropy_by_depth", "plot_entropy_by_depth"]

_NEEDED = ("model", "cut", "depth", "entropy", "full_rank")


def entropy_by_depth(atlas: Sequence[dict[str, Any]], *, normalized: bool = True) -> Any:
    """A DataFrame ``model, cut, depth, entropy`` sorted by model, cut and depth.

    With ``normalized``, the entropy is divided by its maximum ``log2(full_rank)`` (0 to 1),
    so layers of different widths compare; cuts with a full rank of 1 are left out.

    Examples
    --------
    >>> rows = [{"model": "a", "cut": "out|in", "depth": 0.0, "entropy": 1.0, "full_rank": 4}]
    >>> entropy_by_depth(rows)["entropy"].tolist()
    [0.5]
    """
    import pandas as pd

    frame = pd.DataFrame(list(atlas))
    missing = [c for c in _NEEDED if c not in frame.columns]
    if frame.empty or missing:
        raise ValueError(f"the atlas needs rows with columns {list(_NEEDED)} (from "
                         f"spectra_atlas_many); missing: {missing or 'every row'}")
    frame = frame[frame["full_rank"] > 1].copy()
    if normalized:
        frame["entropy"] = frame["entropy"] / frame["full_rank"].map(math.log2)
    return (frame[["model", "cut", "depth", "entropy"]]
            .sort_values(["model", "cut", "depth"], kind="stable").reset_index(drop=True))


def plot_entropy_by_depth(atlas: Sequence[dict[str, Any]], path: str | os.PathLike, *,
                          cuts: Sequence[str] | None = None, normalized: bool = True) -> str:
    """One panel per cut: each model's entropy against the layer's relative depth.

    Parameters
    ----------
    atlas
        Rows of :func:`tnconv.study.atlas_many.spectra_atlas_many`.
    path
        The PNG file to write.
    cuts
        The cuts to draw (default: every cut of the table, in order of appearance).
    normalized
        Entropy over ``log2(full_rank)`` (see :func:`entropy_by_depth`); else bits.

    Returns
    -------
    str
        ``path``.

    Examples
    --------
    >>> import tempfile, os
    >>> rows = [{"model": m, "cut": "out|in", "depth": d, "entropy": e, "full_rank": 8}
    ...         for m in ("a", "b") for d, e in ((0.0, 1.0), (1.0, 2.5))]
    >>> path = os.path.join(tempfile.mkdtemp(), "cmp.png")
    >>> plot_entropy_by_depth(rows, path) == path and os.path.getsize(path) > 0
    True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = entropy_by_depth(atlas, normalized=normalized)
    names = list(dict.fromkeys(frame["cut"])) if cuts is None else list(cuts)
    unknown = [c for c in names if c not in set(frame["cut"])]
    if unknown or not names:
        raise ValueError(f"cuts {unknown or names} are not in the atlas; valid: "
                         f"{sorted(set(frame['cut']))}")
    ncol = min(len(names), 4)
    nrow = math.ceil(len(names) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.9 * nrow), squeeze=False,
                             sharex=True, sharey=True)
    for ax, cut in zip(axes.flat, names):
        for model, part in frame[frame["cut"] == cut].groupby("model", sort=False):
            ax.plot(part["depth"], part["entropy"], marker="o", ms=3, label=str(model))
        ax.set_title(cut, fontsize=9)
        ax.set_xlabel("relative depth")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("entropy / log2(rank)" if normalized else "entropy (bits)")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
