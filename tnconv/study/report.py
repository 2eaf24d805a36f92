"""Findings of a correlation-compression study, computed from its tables, and their summary.

Everything here reads the rows written by :func:`tnconv.sweep`, :func:`tnconv.spectra_atlas` and
:func:`tnconv.retrain`; no number in the summary is typed in by hand.

Definitions
-----------
* A truncation is **safe** when it costs at most ``threshold`` accuracy (default 1 point).
* The **safe level** of a (layer, cut) is the smallest kept fraction in the single-layer sweep
  that is safe, and its **safe norm loss** the norm loss there: how much of the kernel's norm
  can go along that cut without hurting the model. Higher safe norm loss = more compressible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["safe_table", "findings", "summary_markdown"]


def _frame(rows: Sequence[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame(list(rows))


def safe_table(single_rows: Sequence[dict[str, Any]], *, threshold: float = 0.01) -> Any:
    """Per (layer, cut): the most aggressive safe level of the single-layer sweep.

    Returns
    -------
    pandas.DataFrame
        Columns ``layer, index, cut, safe_level, safe_rank, full_rank, safe_norm_loss,
        safe_rel_error, safe_compression, worst_drop`` (``worst_drop``: the accuracy drop at
        the most aggressive level swept).

    Examples
    --------
    >>> rows = [dict(layer="a", index=0, cut="c", level=lv, rank=r, full_rank=4,
    ...              norm_loss=nl, rel_error=nl, compression=1.0, accuracy_drop=d)
    ...         for lv, r, nl, d in [(1.0, 4, 0.0, 0.0), (0.5, 2, 0.1, 0.005), (0.25, 1, 0.3, 0.2)]]
    >>> safe_table(rows)[["safe_level", "safe_norm_loss", "worst_drop"]].values.tolist()
    [[0.5, 0.1, 0.2]]
    """
    df = _frame(single_rows)
    out = []
    for (layer, cut), g in df.groupby(["layer", "cut"], sort=False):
        g = g.sort_values("level", ascending=False)
        ok = g[g["accuracy_drop"] <= threshold]
        best = ok.iloc[-1] if len(ok) else None
        out.append({
            "layer": layer, "index": int(g["index"].iloc[0]), "cut": cut,
            "safe_level": float(best["level"]) if best is not None else math.nan,
            "safe_rank": int(best["rank"]) if best is not None else math.nan,
            "full_rank": int(g["full_rank"].iloc[0]),
            "safe_norm_loss": float(best["norm_loss"]) if best is not None else 0.0,
            "safe_rel_error": float(best["rel_error"]) if best is not None else 0.0,
            "safe_compression": float(best["compression"]) if best is not None else math.nan,
            "worst_drop": float(g["accuracy_drop"].iloc[-1]),
        })
    return _frame(out)


def _spearman(x: Sequence[float], y: Sequence[float]) -> float:
    import pandas as pd

    if len(x) < 3:
        return math.nan
    return float(pd.Series(list(x)).rank().corr(pd.Series(list(y)).rank()))


def _epochs_to(curve: Sequence[dict[str, Any]], target: float) -> int | None:
    for row in curve:
        if row.get("accuracy") is not None and row["accuracy"] >= target:
            return int(row["epoch"])
    return None


def findings(
    *,
    single: Sequence[dict[str, Any]],
    all_layers: Sequence[dict[str, Any]] = (),
    atlas: Sequence[dict[str, Any]] = (),
    recovery: dict[str, Sequence[dict[str, Any]]] | None = None,
    threshold: float = 0.01,
) -> dict[str, Any]:
    """The study's findings as numbers (the input of :func:`summary_markdown`).

    Parameters
    ----------
    single, all_layers
        Rows of the single-layer and all-layers sweeps.
    atlas
        Rows of :func:`tnconv.spectra_atlas`.
    recovery
        ``{"plain": curve, "kept": curve}`` from :func:`tnconv.retrain`, plus optionally
        ``"target"``: ``{"cut": ..., "level": ..., "accuracy": ...}`` of the retrained model.
    threshold
        Largest accuracy drop still counted as "little loss".

    Returns
    -------
    dict
        ``baseline_accuracy``, ``threshold``, ``cuts`` (per cut, best first), ``layers`` (per
        layer), ``depth_correlation``, ``all_layers`` (per cut), ``entropy`` (per cut),
        ``recovery``.
    """
    safe = safe_table(single, threshold=threshold)
    base = float(_frame(single)["baseline_accuracy"].iloc[0])
    cuts = []
    for cut, g in safe.groupby("cut", sort=False):
        cuts.append({
            "cut": cut,
            "mean_safe_norm_loss": float(g["safe_norm_loss"].mean()),
            "median_safe_level": float(g["safe_level"].median()),
            "layers_safe_at_min_level": int((g["worst_drop"] <= threshold).sum()),
            "layers": int(len(g)),
            "mean_worst_drop": float(g["worst_drop"].mean()),
        })
    cuts.sort(key=lambda c: -c["mean_safe_norm_loss"])
    layers = []
    for layer, g in safe.groupby("layer", sort=False):
        top = g.sort_values("safe_norm_loss", ascending=False).iloc[0]
        layers.append({
            "layer": layer, "index": int(g["index"].iloc[0]),
            "mean_safe_norm_loss": float(g["safe_norm_loss"].mean()),
            "best_cut": str(top["cut"]), "best_safe_norm_loss": float(top["safe_norm_loss"]),
            "mean_worst_drop": float(g["worst_drop"].mean()),
        })
    layers.sort(key=lambda r: r["index"])
    out: dict[str, Any] = {
        "baseline_accuracy": base, "threshold": threshold, "n": int(single[0]["n"]),
        "cuts": cuts, "layers": layers,
        "depth_correlation": _spearman([r["index"] for r in layers],
                                       [r["mean_safe_norm_loss"] for r in layers]),
    }
    if all_layers:
        df = _frame(all_layers)
        per = []
        for cut, g in df.groupby("cut", sort=False):
            g = g.sort_values("level", ascending=False)
            ok = g[(g["accuracy_drop"] <= threshold) & (g["level"] < 1.0)]
            best = ok.iloc[-1] if len(ok) else None
            last = g.iloc[-1]
            per.append({
                "cut": cut,
                "safe_level": float(best["level"]) if best is not None else None,
                "safe_norm_loss": float(best["norm_loss"]) if best is not None else 0.0,
                "safe_compression": float(best["compression"]) if best is not None else None,
                "min_level": float(last["level"]), "min_level_accuracy": float(last["accuracy"]),
                "min_level_norm_loss": float(last["norm_loss"]),
            })
        per.sort(key=lambda c: -c["safe_norm_loss"])
        out["all_layers"] = per
    if atlas:
        df = _frame(atlas)
        full = df["full_rank"].clip(lower=2).astype(float)
        df = df.assign(rel_entropy=df["entropy"].clip(lower=0) / full.map(math.log2))
        ent = df.groupby("cut", sort=False)[["entropy", "rel_entropy"]].mean()
        out["entropy"] = [{"cut": c, "mean_entropy": float(v["entropy"]),
                           "mean_relative_entropy": float(v["rel_entropy"])}
                          for c, v in ent.iterrows()]
    if recovery:
        rec: dict[str, Any] = {"target": recovery.get("target")}
        for key in ("plain", "kept"):
            curve = list(recovery.get(key) or [])
            if not curve:
                continue
            acc = [r["accuracy"] for r in curve]
            rec[key] = {"accuracy": acc, "epochs_to_baseline": _epochs_to(curve, base - threshold),
                        "recovered": (acc[-1] - acc[0]) / max(base - acc[0], 1e-12)}
        out["recovery"] = rec
    return out


def _best_min(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return max(rows, key=lambda r: r["min_level_accuracy"])


def _cell(cut: str) -> str:
    """A cut in a Markdown table cell (its ``|`` escaped)."""
    return "`" + cut.replace("|", "\\|") + "`"


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _cuts_sentence(f: dict[str, Any]) -> list[str]:
    cuts, thr = f["cuts"], f["threshold"]
    if not cuts:
        return []
    best, worst = cuts[0], cuts[-1]
    return [
        f"- **Cuts, one layer at a time.** `{best['cut']}` truncates best: on average "
        f"{_pct(best['mean_safe_norm_loss'])} of a kernel's norm goes with little loss "
        f"(median safe level: keep {_pct(best['median_safe_level'])} of the singular "
        f"values); `{worst['cut']}` is the least compressible "
        f"({_pct(worst['mean_safe_norm_loss'])}). At the most aggressive level, "
        f"{best['layers_safe_at_min_level']} of {best['layers']} layers stay within "
        f"{_pct(thr)} along `{best['cut']}`."]


def _layers_sentence(f: dict[str, Any]) -> list[str]:
    layers = f["layers"]
    if not layers:
        return []
    top = max(layers, key=lambda r: r["mean_safe_norm_loss"])
    low = min(layers, key=lambda r: r["mean_safe_norm_loss"])
    rho = f["depth_correlation"]
    trend = ("grows with depth" if rho > 0.3 else "shrinks with depth" if rho < -0.3
             else "shows no clear trend with depth")
    rho_text = "n/a" if math.isnan(rho) else f"{rho:+.2f}"
    return [
        f"- **Layers.** The most compressible layer is `{top['layer']}` (mean safe norm "
        f"loss over cuts {_pct(top['mean_safe_norm_loss'])}, best along `{top['best_cut']}`: "
        f"{_pct(top['best_safe_norm_loss'])}); the least is `{low['layer']}` "
        f"({_pct(low['mean_safe_norm_loss'])}). Compressibility {trend} "
        f"(Spearman correlation with depth {rho_text} over {len(layers)} layers)."]


def _all_layers_sentence(f: dict[str, Any]) -> list[str]:
    rows, thr = f.get("all_layers", []), f["threshold"]
    if not rows:
        return []
    row, worst = rows[0], rows[-1]
    if row["safe_level"] is None:
        best = _best_min(rows)
        return [
            f"- **All layers at once.** No cut keeps the accuracy within {_pct(thr)} at the "
            f"levels swept below 100%; at keep {_pct(row['min_level'])} the best cut, "
            f"`{best['cut']}`, keeps {_pct(best['min_level_accuracy'])} accuracy."]
    return [
        f"- **All layers at once.** Along `{row['cut']}` every layer can be truncated to "
        f"keep {_pct(row['safe_level'])} of its singular values with little loss "
        f"(norm loss {_pct(row['safe_norm_loss'])}, dense/factored parameters "
        f"{row['safe_compression'] or float('nan'):.2f}); at keep "
        f"{_pct(row['min_level'])} the accuracy is "
        f"{_pct(row['min_level_accuracy'])}. The hardest cut is `{worst['cut']}` "
        f"(accuracy {_pct(worst['min_level_accuracy'])} at keep {_pct(worst['min_level'])})."]


def _entropy_sentence(f: dict[str, Any]) -> list[str]:
    ent = f.get("entropy")
    if not ent:
        return []
    lo = min(ent, key=lambda e: e["mean_relative_entropy"])
    hi = max(ent, key=lambda e: e["mean_relative_entropy"])
    return [
        f"- **Entropy.** Relative to its maximum (log2 of the full rank), the entanglement "
        f"entropy is lowest along `{lo['cut']}` ({100 * lo['mean_relative_entropy']:.0f}% "
        f"of the maximum on average over layers, {lo['mean_entropy']:.2f} bits) and highest "
        f"along `{hi['cut']}` ({100 * hi['mean_relative_entropy']:.0f}%, "
        f"{hi['mean_entropy']:.2f} bits): the lower, the more the spectrum is concentrated "
        "in a few singular values."]


def _recovery_sentence(f: dict[str, Any]) -> list[str]:
    rec, thr = f.get("recovery"), f["threshold"]
    if not rec or not rec.get("plain"):
        return []
    t = rec.get("target") or {}
    p, k = rec["plain"], rec.get("kept")
    n_ep = len(p["accuracy"]) - 1

    def _when(r: dict[str, Any]) -> str:
        e = r["epochs_to_baseline"]
        return (f"back within {_pct(thr)} of the baseline after {e} epoch(s)" if e is not None
                else f"not back within {_pct(thr)} of the baseline in {n_ep} epoch(s)")

    head = (f"`{t.get('cut')}` at keep {_pct(t.get('level'))} on all layers"
            if t else "the truncated model")
    text = (f"- **Retraining.** {head} drops the accuracy to {_pct(p['accuracy'][0])}; "
            f"retraining brings it to {_pct(p['accuracy'][-1])} after {n_ep} epoch(s) "
            f"({_pct(p['recovered'])} of the loss recovered, {_when(p)})")
    if k:
        text += (f"; keeping the truncation (ranks fixed) it reaches {_pct(k['accuracy'][-1])}"
                 f" ({_when(k)}), so the recovered model stays compressed")
    return [text + "."]


def _tables(f: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if f["cuts"]:
        lines += ["### Cuts, ranked by mean safe norm loss (single layer)", "",
                  "| cut | mean safe norm loss | median safe level | mean drop at min level |",
                  "|---|---|---|---|"]
        lines += [f"| {_cell(c['cut'])} | {_pct(c['mean_safe_norm_loss'])} | "
                  f"{_pct(c['median_safe_level'])} | {_pct(c['mean_worst_drop'])} |"
                  for c in f["cuts"]]
        lines.append("")
    if f["layers"]:
        lines += ["### Layers", "", "| layer | depth | mean safe norm loss | best cut | "
                  "its safe norm loss |", "|---|---|---|---|---|"]
        lines += [f"| `{r['layer']}` | {r['index']} | {_pct(r['mean_safe_norm_loss'])} | "
                  f"{_cell(r['best_cut'])} | {_pct(r['best_safe_norm_loss'])} |"
                  for r in f["layers"]]
        lines.append("")
    return lines


def summary_markdown(f: dict[str, Any], *, title: str, setup: Sequence[str] = (),
                     plots: Sequence[tuple[str, str]] = ()) -> str:
    """A Markdown summary of :func:`findings`: the findings in sentences, with numbers.

    Parameters
    ----------
    f
        The output of :func:`findings`.
    title
        First heading.
    setup
        Bullet lines describing the run (model, data, profile, timings).
    plots
        ``(caption, relative path)`` of the PNG files to show.

    Returns
    -------
    str
        The Markdown text: setup, findings (one bullet per kind), tables, plots.

    Examples
    --------
    >>> f = dict(threshold=0.01, baseline_accuracy=0.9, n=100, cuts=[], layers=[])
    >>> print(summary_markdown(f, title="Study").splitlines()[0])
    # Study
    """
    lines = [f"# {title}", ""]
    if setup:
        lines += ["## Setup", "", *[f"- {s}" for s in setup], ""]
    lines += ["## Findings", "",
              f"Baseline test accuracy: **{_pct(f['baseline_accuracy'])}** on {f['n']} images. "
              f"\"Little loss\" means an accuracy drop of at most {_pct(f['threshold'])}; the "
              "*safe norm loss* of a layer along a cut is the norm lost at the most aggressive "
              "level that stays within it.", ""]
    for sentences in (_cuts_sentence, _layers_sentence, _all_layers_sentence,
                      _entropy_sentence, _recovery_sentence):
        lines += sentences(f)
    lines.append("")
    lines += _tables(f)
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{cap}]({path})" for cap, path in plots]
        lines.append("")
    return "\n".join(lines)
