"""PNG figures of a correlation-compression study (matplotlib, Agg backend).

Each function takes the rows of one table, draws one figure and saves it; matplotlib is
imported inside the functions, with the non-interactive Agg backend.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

__all__ = ["plot_entropy", "plot_accuracy_vs_norm_loss", "plot_depth", "plot_recovery",
           "plot_all_layers"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _frame(rows: Sequence[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame(list(rows))


def _save(fig: Any, path: str | os.PathLike) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _plt().close(fig)
    return str(path)


def plot_entropy(atlas: Sequence[dict[str, Any]], path: str | os.PathLike) -> str:
    """Heatmap of the entanglement entropy (bits) per layer (rows) and cut (columns).

    Examples
    --------
    >>> import torch, tnconv, tempfile, os
    >>> rows = tnconv.spectra_atlas({"a": torch.randn(8, 4, 3, 3), "b": torch.randn(8, 8, 3, 3)})
    >>> os.path.exists(plot_entropy(rows, os.path.join(tempfile.mkdtemp(), "e.png")))
    True
    """
    plt = _plt()
    df = _frame(atlas)
    layers = list(dict.fromkeys(df["layer"]))
    cuts = list(dict.fromkeys(df["cut"]))
    table = df.pivot_table(index="layer", columns="cut", values="entropy", sort=False)
    table = table.reindex(index=layers, columns=cuts)
    fig, ax = plt.subplots(figsize=(1.2 * len(cuts) + 3, 0.28 * len(layers) + 2))
    im = ax.imshow(table.values, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(cuts)), cuts, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(layers)), layers, fontsize=7 if len(layers) > 20 else 9)
    if len(layers) * len(cuts) <= 60:
        for i in range(len(layers)):
            for j in range(len(cuts)):
                ax.text(j, i, f"{max(table.values[i, j], 0.0) + 0.0:.1f}", ha="center", va="center",
                        color="w", fontsize=7)
    fig.colorbar(im, ax=ax, label="entropy (bits)")
    ax.set_title("Entanglement entropy per layer and cut")
    return _save(fig, path)


def _depth_colours(df: Any) -> tuple[dict[int, int], list[str], bool]:
    """A discrete colour slot per depth, or per ResNet stage when layers are ``layerN.*``.

    Returns ``{layer index: slot}``, the slot labels and whether the slots are stages.
    """
    from .trend import stage_of

    names = df.drop_duplicates("index").sort_values("index")
    pairs = [(int(i), str(n)) for i, n in zip(names["index"], names["layer"])]
    if not any(stage_of(n) for _, n in pairs):
        return {i: k for k, (i, _) in enumerate(pairs)}, [f"{i}: {n}" for i, n in pairs], False
    labels: list[str] = []
    for _, n in pairs:
        labels.append(stage_of(n) or ("head" if any(x.startswith("layer") for x in labels)
                                      else "stem"))
    keys = list(dict.fromkeys(labels))
    return {i: keys.index(lab) for (i, _), lab in zip(pairs, labels)}, keys, True


def _depth_colorbar(fig: Any, axes: Any, ticks: list[str], stages: bool) -> tuple[Any, Any]:
    """A colorbar with one labelled block per depth (or stage); returns ``(cmap, norm)``."""
    import matplotlib as mpl

    n = max(len(ticks), 1)
    cmap = mpl.colormaps["viridis"].resampled(n)
    norm = mpl.colors.BoundaryNorm([k - 0.5 for k in range(n + 1)], n)
    bar = fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, shrink=0.8,
                       ticks=range(n), label="stage" if stages else "layer (depth: name)")
    bar.ax.set_yticklabels(ticks, fontsize=7 if n <= 20 else 5)
    return cmap, norm


def plot_accuracy_vs_norm_loss(single: Sequence[dict[str, Any]], path: str | os.PathLike,
                               *, all_layers: Sequence[dict[str, Any]] = ()) -> str:
    """Accuracy against norm loss, one panel per cut; points: one layer truncated (coloured by
    depth); line: all layers truncated at once."""
    plt = _plt()
    df = _frame(single)
    al = _frame(all_layers) if all_layers else None
    cuts = list(dict.fromkeys(df["cut"]))
    ncol = min(4, len(cuts))
    nrow = -(-len(cuts) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol + 1, 3.0 * nrow), squeeze=False,
                             sharey=True, layout="constrained")
    base = float(df["baseline_accuracy"].iloc[0])
    slots, ticks, stages = _depth_colours(df)
    cmap, norm = _depth_colorbar(fig, axes, ticks, stages)
    for ax, cut in zip(axes.flat, cuts):
        g = df[df["cut"] == cut]
        ax.scatter(g["norm_loss"], g["accuracy"], c=[slots[int(i)] for i in g["index"]], cmap=cmap,
                   norm=norm, s=14, label="one layer truncated")
        if al is not None:
            h = al[al["cut"] == cut].sort_values("norm_loss")
            ax.plot(h["norm_loss"], h["accuracy"], "k.-", lw=1, label="all layers")
        ax.axhline(base, color="gray", ls="--", lw=0.8, label="baseline")
        ax.set_title(cut, fontsize=9)
        ax.set_xlabel("norm loss")
    for ax in axes.flat[len(cuts):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy")
    axes.flat[0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Accuracy against norm loss per cut")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def plot_depth(safe: Any, path: str | os.PathLike, *, threshold: float = 0.01) -> str:
    """Compressibility against layer depth: safe norm loss (see :mod:`tnconv.study.report`)
    per layer, one line per cut."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for cut, g in safe.groupby("cut", sort=False):
        g = g.sort_values("index")
        ax.plot(g["index"], g["safe_norm_loss"], ".-", label=cut, lw=1)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("layer depth (index among the conv layers)")
    ax.set_ylabel(f"norm loss at accuracy drop <= {100 * threshold:g}%")
    ax.set_title("Compressibility against depth (single-layer truncation)")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_recovery(curves: dict[str, Sequence[dict[str, Any]]], path: str | os.PathLike, *,
                  baseline: float | None = None, cut: str | None = None,
                  level: float | None = None, rank: str | None = None) -> str:
    """Accuracy per retraining epoch (epoch 0: the truncated model), one line per curve; the
    title names the truncation (``cut`` at keep ``level``, ``rank`` e.g. "rank 4 of 32")."""
    from .report import percent

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, curve in curves.items():
        ax.plot([r["epoch"] for r in curve], [r["accuracy"] for r in curve], "o-", label=label)
    if baseline is not None:
        ax.axhline(baseline, color="gray", ls="--", lw=0.8, label="before truncation")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("retraining epoch")
    ax.set_ylabel("test accuracy")
    what = (f"{cut} at keep {percent(level)}" + (f" ({rank})" if rank else "")
            if cut is not None and level is not None else "the truncated model")
    ax.set_title(f"Recovery after truncating every layer:\n{what}", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _decade_axis(ax: Any, levels: Any) -> None:
    """A log x axis labelled at every decade it spans, and at every level swept (minor)."""
    import math

    from matplotlib.ticker import FixedLocator, FuncFormatter

    from .report import percent

    lo = min(float(v) for v in levels)
    low = math.floor(math.log10(lo))
    decades = [10.0 ** e for e in range(low, 1)]
    ax.set_xscale("log")
    ax.set_xlim(10.0 ** low * 0.9, 1.1)
    ax.xaxis.set_major_locator(FixedLocator(decades))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: percent(v, 0)))
    swept = sorted({float(v) for v in levels} - set(decades))
    ax.xaxis.set_minor_locator(FixedLocator(swept))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: percent(v, 0)))
    ax.tick_params(axis="x", which="minor", labelsize=7, labelcolor="dimgray")


def plot_all_layers(all_layers: Sequence[dict[str, Any]], path: str | os.PathLike) -> str:
    """Accuracy against the kept fraction when every layer is truncated, one line per cut."""
    plt = _plt()
    df = _frame(all_layers)
    fig, ax = plt.subplots(figsize=(6, 4))
    for cut, g in df.groupby("cut", sort=False):
        g = g.sort_values("level")
        ax.plot(g["level"], g["accuracy"], ".-", label=cut)
    ax.axhline(float(df["baseline_accuracy"].iloc[0]), color="gray", ls="--", lw=0.8)
    _decade_axis(ax, df["level"])
    ax.set_xlabel(f"level ({df['criterion'].iloc[0]}), every layer")
    ax.set_ylabel("test accuracy")
    ax.set_title("All layers truncated at once")
    ax.legend(fontsize=7)
    return _save(fig, path)
