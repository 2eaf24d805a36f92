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
import statistics
from collections.abc import Sequence
from typing import Any

from .trend import ALPHA, depth_trend, stage_summary

__all__ = ["safe_table", "findings", "summary_markdown", "percent"]


def _compression_ratio(row: Any) -> float:
    """A row's ``compression_ratio`` (``compression`` in sweep files written before 0.x)."""
    return float(row["compression_ratio"] if "compression_ratio" in row else row["compression"])


def _frame(rows: Sequence[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame(list(rows))


def safe_table(single_rows: Sequence[dict[str, Any]], *, threshold: float = 0.01) -> Any:
    """Per (layer, cut): the most aggressive safe level of the single-layer sweep.

    Returns
    -------
    pandas.DataFrame
        Columns ``layer, index, cut, safe_level, safe_rank, full_rank, safe_norm_loss,
        safe_rel_error, safe_compression, min_level, min_rank, worst_drop`` (``worst_drop``:
        the accuracy drop at the most aggressive level swept, kept rank ``min_rank``). Only
        levels that truncate (kept rank below the full rank) count as safe levels; without
        one, ``safe_level`` and ``safe_rank`` are NaN and the safe norm loss is 0.

    Examples
    --------
    >>> rows = [dict(layer="a", index=0, cut="c", level=lv, rank=r, full_rank=4,
    ...              norm_loss=nl, rel_error=nl, compression_ratio=1.0,
    ...              accuracy_drop=d)
    ...         for lv, r, nl, d in [(1.0, 4, 0.0, 0.0), (0.5, 2, 0.1, 0.005), (0.25, 1, 0.3, 0.2)]]
    >>> safe_table(rows)[["safe_level", "safe_norm_loss", "worst_drop"]].values.tolist()
    [[0.5, 0.1, 0.2]]
    """
    df = _frame(single_rows)
    out = []
    for (layer, cut), g in df.groupby(["layer", "cut"], sort=False):
        g = g.sort_values("level", ascending=False)
        # a level that keeps the full rank truncates nothing: it is no safe level
        ok = g[(g["accuracy_drop"] <= threshold) & (g["rank"] < g["full_rank"])]
        best = ok.iloc[-1] if len(ok) else None
        out.append({
            "layer": layer, "index": int(g["index"].iloc[0]), "cut": cut,
            "safe_level": float(best["level"]) if best is not None else math.nan,
            "safe_rank": int(best["rank"]) if best is not None else math.nan,
            "full_rank": int(g["full_rank"].iloc[0]),
            "safe_norm_loss": float(best["norm_loss"]) if best is not None else 0.0,
            "safe_rel_error": float(best["rel_error"]) if best is not None else 0.0,
            "safe_compression": _compression_ratio(best) if best is not None else math.nan,
            "min_level": float(g["level"].iloc[-1]), "min_rank": int(g["rank"].iloc[-1]),
            "worst_drop": float(g["accuracy_drop"].iloc[-1]),
        })
    return _frame(out)


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
        layer), ``depth_trend`` (:func:`tnconv.study.trend.depth_trend` of the layers' mean
        safe norm loss), ``stages`` (per ResNet stage, else empty), ``all_layers`` (per cut),
        ``entropy`` (per cut), ``recovery``.
    """
    safe = safe_table(single, threshold=threshold)
    base = float(_frame(single)["baseline_accuracy"].iloc[0])
    layers = _layer_findings(safe)
    out: dict[str, Any] = {
        "baseline_accuracy": base, "threshold": threshold, "n": int(single[0]["n"]),
        "cuts": _cut_findings(safe, threshold), "layers": layers,
        "depth_trend": depth_trend([r["index"] for r in layers],
                                   [r["mean_safe_norm_loss"] for r in layers]),
        "stages": stage_summary(layers),
    }
    if all_layers:
        out["all_layers"] = _all_layer_findings(all_layers, threshold)
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


def _median(values: Any) -> float | None:
    v = [float(x) for x in values if not math.isnan(float(x))]
    return float(statistics.median(v)) if v else None


def _cut_findings(safe: Any, threshold: float) -> list[dict[str, Any]]:
    """Per cut over layers, most compressible first (ties by name, so the order is fixed)."""
    cuts = []
    for cut, g in safe.groupby("cut", sort=False):
        cuts.append({
            "cut": cut,
            "mean_safe_norm_loss": float(g["safe_norm_loss"].mean()),
            "median_safe_level": _median(g["safe_level"]),
            "median_safe_rank": _median(g["safe_rank"]),
            "median_full_rank": _median(g["full_rank"]),
            "layers_with_safe_level": int(g["safe_level"].notna().sum()),
            "layers_safe_at_min_level": int(((g["worst_drop"] <= threshold)
                                             & (g["min_rank"] < g["full_rank"])).sum()),
            "layers": int(len(g)),
            "min_level": float(g["min_level"].min()),
            "mean_worst_drop": float(g["worst_drop"].mean()),
        })
    cuts.sort(key=lambda c: (-c["mean_safe_norm_loss"], c["cut"]))
    return cuts


def _layer_findings(safe: Any) -> list[dict[str, Any]]:
    layers = []
    for layer, g in safe.groupby("layer", sort=False):
        top = g.sort_values(["safe_norm_loss", "cut"], ascending=[False, True]).iloc[0]
        layers.append({
            "layer": layer, "index": int(g["index"].iloc[0]),
            "mean_safe_norm_loss": float(g["safe_norm_loss"].mean()),
            "best_cut": str(top["cut"]) if top["safe_norm_loss"] > 0 else None,
            "best_safe_norm_loss": float(top["safe_norm_loss"]),
            "mean_worst_drop": float(g["worst_drop"].mean()),
        })
    layers.sort(key=lambda r: r["index"])
    return layers


def _all_layer_findings(all_layers: Sequence[dict[str, Any]], threshold: float
                        ) -> list[dict[str, Any]]:
    """Per cut of the all-layers sweep; ``rank``/``full_rank`` are summed over the layers."""
    df = _frame(all_layers)
    per = []
    for cut, g in df.groupby("cut", sort=False):
        g = g.sort_values("level", ascending=False)
        ok = g[(g["accuracy_drop"] <= threshold) & (g["rank"] < g["full_rank"])]
        best = ok.iloc[-1] if len(ok) else None
        last = g.iloc[-1]
        per.append({
            "cut": cut,
            "safe_level": float(best["level"]) if best is not None else None,
            "safe_rank": int(best["rank"]) if best is not None else None,
            "full_rank": int(last["full_rank"]),
            "safe_norm_loss": float(best["norm_loss"]) if best is not None else 0.0,
            "safe_compression": _compression_ratio(best) if best is not None else None,
            "min_level": float(last["level"]), "min_level_rank": int(last["rank"]),
            "min_level_accuracy": float(last["accuracy"]),
            "min_level_norm_loss": float(last["norm_loss"]),
        })
    per.sort(key=lambda c: (-c["safe_norm_loss"], c["cut"]))
    return per


def percent(x: float | None, digits: int = 1) -> str:
    """A fraction as a percentage; ``"n/a"`` for None or NaN, and never ``"-0.0%"``.

    Examples
    --------
    >>> percent(0.1234), percent(-0.00001), percent(None)
    ('12.3%', '0.0%', 'n/a')
    """
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    v = round(100 * float(x), digits)
    return f"{v + 0.0 if v != 0 else 0.0:.{digits}f}%"


_pct = percent


def _cell(cut: str) -> str:
    """A cut in a Markdown table cell (its ``|`` escaped)."""
    return "`" + cut.replace("|", "\\|") + "`"


def _names(rows: Sequence[dict[str, Any]], key: str = "cut") -> str:
    """The names in backticks, joined by commas and a final "and"."""
    names = [f"`{r[key]}`" for r in rows]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _ties(rows: Sequence[dict[str, Any]], key: str, *, low: bool = False
          ) -> list[dict[str, Any]]:
    """Every row at the highest (``low``: lowest) value of ``key``, ties included."""
    best = (min if low else max)(r[key] for r in rows)
    return [r for r in rows if abs(r[key] - best) <= 1e-12]


def _rank(rank: Any, full: Any) -> str:
    if rank is None or (isinstance(rank, float) and math.isnan(rank)):
        return "no rank"
    return f"rank {rank:g} of {full:g}"


def _cut_detail(c: dict[str, Any]) -> str:
    if c.get("median_safe_level") is None:
        return "no layer has a truncating safe level"
    text = f"median safe level keep {_pct(c['median_safe_level'])}"
    if c.get("median_safe_rank") is not None:
        text += (f", median {_rank(c['median_safe_rank'], c['median_full_rank'])}, over "
                 f"{c['layers_with_safe_level']} of {c['layers']} layers with a safe level")
    return text


def _cuts_sentence(f: dict[str, Any]) -> list[str]:
    cuts, thr = f["cuts"], f["threshold"]
    if not cuts:
        return []
    best, worst = _ties(cuts, "mean_safe_norm_loss"), _ties(cuts, "mean_safe_norm_loss", low=True)
    head = "- **Cuts, one layer at a time.** "
    if best[0]["mean_safe_norm_loss"] <= 0:
        return [head + f"No cut can be truncated in any layer within {_pct(thr)}: every "
                "truncating level swept costs more than that."]
    verb = "truncates best" if len(best) == 1 else "truncate best (a tie)"
    text = (head + f"{_names(best)} {verb}: on average {_pct(best[0]['mean_safe_norm_loss'])} "
            "of a kernel's norm goes with little loss ("
            + "; ".join(_cut_detail(c) for c in best) + ")")
    if len(worst) < len(cuts):
        text += (f"; {_names(worst)} {'is' if len(worst) == 1 else 'are'} the least "
                 f"compressible ({_pct(worst[0]['mean_safe_norm_loss'])}"
                 + ("" if worst[0]["mean_safe_norm_loss"] > 0 else
                    ": no layer has a truncating safe level") + ")")
    b = best[0]
    if "min_level" in b:
        text += (f". At the most aggressive level (keep {_pct(b['min_level'])}), "
                 f"{b['layers_safe_at_min_level']} of {b['layers']} layers stay within "
                 f"{_pct(thr)} along `{b['cut']}`")
    return [text + "."]


def _trend_text(t: dict[str, Any] | None) -> str:
    if not t or t.get("spearman") is None or math.isnan(t["spearman"]):
        n = t.get("n", 0) if t else 0
        return f"Too few layers (n = {n}) or constant values to tell a trend with depth."
    verdict = {"grows": "grows with depth", "shrinks": "shrinks with depth"}.get(
        t["verdict"], "shows no clear trend with depth")
    p = t["p_value"]
    text = (f"Compressibility {verdict}: Spearman correlation {t['spearman']:+.2f} over "
            f"n = {t['n']} layers, permutation " + ("p < 0.001" if p < 0.001 else f"p = {p:.3f}"))
    if t.get("ci"):
        text += f", bootstrap 95% interval [{t['ci'][0]:+.2f}, {t['ci'][1]:+.2f}]"
    return text + f" (a trend is claimed only at p < {ALPHA:g})."


def _layers_sentence(f: dict[str, Any]) -> list[str]:
    layers = f["layers"]
    if not layers:
        return []
    top = _ties(layers, "mean_safe_norm_loss")
    low = _ties(layers, "mean_safe_norm_loss", low=True)
    t0 = top[0]
    best = (f", best along `{t0['best_cut']}`: {_pct(t0['best_safe_norm_loss'])}"
            if len(top) == 1 and t0.get("best_cut") else "")
    text = (f"- **Layers.** The most compressible {'layer is' if len(top) == 1 else 'layers are'}"
            f" {_names(top, 'layer')} (mean safe norm loss over cuts "
            f"{_pct(t0['mean_safe_norm_loss'])}{best})")
    if len(low) < len(layers):
        text += (f"; the least {'is' if len(low) == 1 else 'are'} {_names(low, 'layer')} "
                 f"({_pct(low[0]['mean_safe_norm_loss'])})")
    text += ". " + _trend_text(f.get("depth_trend"))
    if f.get("stages"):
        text += (" Per stage (mean safe norm loss over its layers and cuts): " + ", ".join(
            f"{s['stage']} {_pct(s['mean'])} ({s['layers']} layer{'s' * (s['layers'] > 1)})"
            for s in f["stages"]) + ".")
    return [text]


def _all_layers_sentence(f: dict[str, Any]) -> list[str]:
    rows, thr = f.get("all_layers", []), f["threshold"]
    if not rows:
        return []
    hard, easy = _ties(rows, "min_level_accuracy", low=True), _ties(rows, "min_level_accuracy")

    def _at(rs: list[dict[str, Any]]) -> str:
        r = rs[0]
        rank = (f", {_rank(r['min_level_rank'], r['full_rank'])} summed over layers"
                if r.get("min_level_rank") is not None and len(rs) == 1 else "")
        return f"{_names(rs)} (accuracy {_pct(r['min_level_accuracy'])}{rank})"

    safe = [r for r in rows if r["safe_level"] is not None]
    head = "- **All layers at once.** "
    if not safe:
        text = head + f"No cut keeps the accuracy within {_pct(thr)} at any truncating level swept"
    else:
        best = _ties(safe, "safe_norm_loss")
        b = best[0]
        rank = (f", {_rank(b['safe_rank'], b['full_rank'])} summed over layers"
                if b.get("safe_rank") is not None and len(best) == 1 else "")
        comp = b.get("safe_compression")
        text = (head + f"Along {_names(best)} every layer can be truncated to keep "
                f"{_pct(b['safe_level'])} of its singular values{rank} with little loss "
                f"(norm loss {_pct(b['safe_norm_loss'])}"
                + (f", dense/factored parameters {comp:.2f}" if comp is not None else "") + ")")
    text += (f". At keep {_pct(rows[0]['min_level'])} on every layer the most robust cut is "
             f"{_at(easy)} and the hardest {_at(hard)}.")
    return [text]


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

    rank = (f" ({_rank(t['rank'], t['full_rank'])} summed over layers)"
            if t and t.get("rank") is not None and t.get("full_rank") is not None else "")
    head = (f"`{t.get('cut')}` at keep {_pct(t.get('level'))}{rank} on all layers"
            if t else "the truncated model")
    text = (f"- **Retraining.** {head} drops the accuracy to {_pct(p['accuracy'][0])}; "
            f"retraining brings it to {_pct(p['accuracy'][-1])} after {n_ep} epoch(s) "
            f"({_pct(p['recovered'])} of the loss recovered, {_when(p)})")
    if k:
        text += (f"; keeping the truncation (ranks fixed) it reaches {_pct(k['accuracy'][-1])}"
                 f" ({_when(k)}), so the recovered model stays compressed")
    return [text + "."]


def _level(level: Any, rank: Any, full: Any) -> str:
    if level is None or (isinstance(level, float) and math.isnan(level)):
        return "none"
    return f"{_pct(level)} ({_rank(rank, full)})" if rank is not None else _pct(level)


def _tables(f: dict[str, Any]) -> list[str]:
    lines: list[str] = []

    def mid(c: dict[str, Any]) -> Any:
        return c.get("median_full_rank")

    if f["cuts"]:
        lines += ["### Cuts, ranked by mean safe norm loss (single layer)", "",
                  "| cut | mean safe norm loss | median safe level (median kept rank) | "
                  "layers with a safe level | mean drop at min level |", "|---|---|---|---|---|"]
        lines += [f"| {_cell(c['cut'])} | {_pct(c['mean_safe_norm_loss'])} | "
                  f"{_level(c['median_safe_level'], c.get('median_safe_rank'), mid(c))} | "
                  f"{c.get('layers_with_safe_level', 'n/a')} of {c['layers']} | "
                  f"{_pct(c['mean_worst_drop'])} |" for c in f["cuts"]]
        lines.append("")
    if f.get("all_layers"):
        lines += ["### All layers at once (ranks summed over layers)", "",
                  "| cut | safe level | its norm loss | accuracy at min level |",
                  "|---|---|---|---|"]
        lines += [f"| {_cell(r['cut'])} | "
                  f"{_level(r['safe_level'], r.get('safe_rank'), r.get('full_rank'))} | "
                  f"{_pct(r['safe_norm_loss'])} | {_pct(r['min_level_accuracy'])} at "
                  f"{_level(r['min_level'], r.get('min_level_rank'), r.get('full_rank'))} |"
                  for r in f["all_layers"]]
        lines.append("")
    if f.get("stages"):
        lines += ["### Stages", "", "| stage | layers | mean safe norm loss | range |",
                  "|---|---|---|---|"]
        lines += [f"| `{s['stage']}` | {s['layers']} | {_pct(s['mean'])} | "
                  f"{_pct(s['min'])} to {_pct(s['max'])} |" for s in f["stages"]]
        lines.append("")
    if f["layers"]:
        lines += ["### Layers", "", "| layer | depth | mean safe norm loss | best cut | "
                  "its safe norm loss |", "|---|---|---|---|---|"]
        lines += [f"| `{r['layer']}` | {r['index']} | {_pct(r['mean_safe_norm_loss'])} | "
                  f"{_cell(r['best_cut']) if r.get('best_cut') else 'none'} | "
                  f"{_pct(r['best_safe_norm_loss'])} |" for r in f["layers"]]
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
