"""Re-render a run folder's ``summary.md`` (and ``findings.json``) from what the folder holds.

``python -m tnconv.study.rerender RUN_FOLDER`` recomputes
the findings from the folder's tables, ``sweep_single.csv`` (with ``sweep_all.csv``,
``atlas.csv``, ``recovery.csv`` and ``config.json``'s threshold when present), and writes the
summary again, keeping its title, setup lines and plots. A folder that keeps only
``findings.json`` (the committed ``docs/results/*`` folders) is re-rendered from it: the
sentences, the depth trend with its evidence and the per-stage table are recomputed, but the
kept ranks cannot be (they are in the CSVs), and a level that truncates nothing is recognised
only where its norm loss is 0.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import report
from .trend import depth_trend, stage_summary

__all__ = ["rerender", "upgrade_findings", "main"]

_FROM_JSON_NOTE = ("Summary re-rendered from `findings.json` by `python -m tnconv.study.rerender` "
                   "(the per-row CSV tables are not in this folder): kept ranks are not shown, "
                   "and levels that truncate nothing are recognised only by a norm loss of 0.")


def _rows(path: Path) -> list[dict[str, Any]]:
    import pandas as pd

    if not path.is_file():
        return []
    df = pd.read_csv(path)
    df = df.drop(columns=[c for c in df.columns if c.startswith("Unnamed")])
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in df.to_dict("records")]


def _recovery(folder: Path, all_rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    rows = _rows(folder / "recovery.csv")
    if not rows:
        return None
    cut, level = rows[0]["cut"], float(rows[0]["level"])
    target = next((r for r in all_rows if r["cut"] == cut and float(r["level"]) == level),
                  {"cut": cut, "level": level})
    out: dict[str, Any] = {"target": target}
    for key in ("plain", "kept"):
        out[key] = sorted((r for r in rows if r["curve"] == key), key=lambda r: r["epoch"])
    return out


def upgrade_findings(f: dict[str, Any]) -> dict[str, Any]:
    """Findings of an older ``findings.json`` with what can be recomputed from it.

    The depth trend (with its evidence) and the stages come from ``f["layers"]``; a safe level
    whose norm loss is 0 truncated nothing and is dropped.

    Examples
    --------
    >>> old = {"layers": [], "cuts": [{"cut": "out|in,kh,kw", "mean_safe_norm_loss": 0.0,
    ...                                "median_safe_level": 0.5, "layers_with_safe_level": 2}]}
    >>> new = upgrade_findings(old)
    >>> new["cuts"][0]["median_safe_level"], new["depth_trend"]["verdict"]
    (None, 'no clear trend')
    """
    f = dict(f)
    f.pop("depth_correlation", None)
    layers = f.get("layers", [])
    f["depth_trend"] = depth_trend([r["index"] for r in layers],
                                   [r["mean_safe_norm_loss"] for r in layers])
    f["stages"] = stage_summary(layers)
    for c in f.get("cuts", []):
        if c["mean_safe_norm_loss"] <= 0:
            c["median_safe_level"] = None
            c["layers_with_safe_level"] = 0
    for r in layers:
        if r["best_safe_norm_loss"] <= 0:
            r["best_cut"] = None
    for r in f.get("all_layers", []):
        if r["safe_norm_loss"] <= 0:
            r["safe_level"] = r["safe_compression"] = None
    for key in ("cuts", "all_layers"):
        f.get(key, []).sort(key=lambda c: (-c.get("mean_safe_norm_loss",
                                                  c.get("safe_norm_loss", 0.0)), c["cut"]))
    return f


def _old_summary(path: Path) -> tuple[str, list[str], list[tuple[str, str]]]:
    """Title, setup bullets and plots of an existing ``summary.md``."""
    title, setup, plots, section = "Correlation compression study", [], [], ""
    if not path.is_file():
        return title, setup, plots
    for line in path.read_text().splitlines():
        if line.startswith("# "):
            title = line[2:].strip()
        elif line.startswith("## "):
            section = line[3:].strip()
        elif section == "Setup" and line.startswith("- ") and line[2:] != _FROM_JSON_NOTE:
            setup.append(line[2:])
        elif section == "Plots" and line.startswith("![") and "](" in line:
            cap, rest = line[2:].split("](", 1)
            plots.append((cap, rest.rstrip(")")))
    return title, setup, plots


def rerender(folder: str | Path) -> str:
    """Recompute the findings of a run folder and write ``findings.json`` and ``summary.md``.

    Returns the path of the summary. Raises ``FileNotFoundError`` when the folder holds
    neither ``sweep_single.csv`` nor ``findings.json``.

    Examples
    --------
    >>> rerender("docs/results/cnn4-full-cpu")  # doctest: +SKIP
    'docs/results/cnn4-full-cpu/summary.md'
    """
    folder = Path(folder)
    title, setup, plots = _old_summary(folder / "summary.md")
    single = _rows(folder / "sweep_single.csv")
    if single:
        cfg_path = folder / "config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        all_rows = _rows(folder / "sweep_all.csv")
        f = report.findings(single=single, all_layers=all_rows, atlas=_rows(folder / "atlas.csv"),
                            recovery=_recovery(folder, all_rows),
                            threshold=float(cfg.get("threshold", 0.01)))
    elif (folder / "findings.json").is_file():
        f = upgrade_findings(json.loads((folder / "findings.json").read_text()))
        setup.append(_FROM_JSON_NOTE)
    else:
        raise FileNotFoundError(f"{folder} holds neither sweep_single.csv nor findings.json")
    (folder / "findings.json").write_text(json.dumps(f, indent=2, default=str) + "\n")
    out = folder / "summary.md"
    out.write_text(report.summary_markdown(f, title=title, setup=setup, plots=plots))
    return str(out)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tnconv.study.rerender RUN_FOLDER [...]``: re-render each folder's summary."""
    p = argparse.ArgumentParser(prog="python -m tnconv.study.rerender",
                                description="Re-render summary.md from a run folder's tables.")
    p.add_argument("folders", nargs="+", help="run folders")
    args = p.parse_args(argv)
    for folder in args.folders:
        print(rerender(folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
