"""Every sentence of the study's summary follows from the tables it summarises.

The tables below are built by hand with a known answer, ties included: the cuts tie at a safe
norm loss of 0 in the all-layers sweep (the case where the old report named the most robust
cut "the hardest"), a cut whose 75% level keeps all 3 singular values (not a safe level), and
depth trends that are and are not significant.
"""

from __future__ import annotations

import json
import math

import pytest

from tnconv.study import report
from tnconv.study.rerender import rerender, upgrade_findings
from tnconv.study.trend import depth_trend, spearman, stage_summary

BASE = 0.90


def _single(layer, index, cut, full, levels):
    """Single-layer rows: ``levels`` is ``[(level, rank, norm_loss, drop), ...]``."""
    return [dict(mode="single", layer=layer, index=index, cut=cut, level=lv, rank=r,
                 full_rank=full, norm_loss=nl, rel_error=nl, compression=full / max(r, 1),
                 accuracy=BASE - d, accuracy_drop=d, baseline_accuracy=BASE, n=1000)
            for lv, r, nl, d in levels]


def _all(cut, full, levels):
    return [dict(mode="all", layer="(all)", index=None, cut=cut, level=lv, rank=r,
                 full_rank=full, norm_loss=nl, rel_error=nl, compression=full / max(r, 1),
                 accuracy=BASE - d, accuracy_drop=d, baseline_accuracy=BASE, n=1000)
            for lv, r, nl, d in levels]


def _tables():
    single = []
    for i, name in enumerate(["l0", "l1", "l2"]):
        # cut A: 16 singular values, safe at keep 25% (rank 4) in every layer
        single += _single(name, i, "A", 16, [(1.0, 16, 0.0, 0.0), (0.5, 8, 0.1 + i / 100, 0.0),
                                             (0.25, 4, 0.2 + i / 100, 0.005),
                                             (0.1, 2, 0.4, 0.3)])
        # cut K: 3 singular values; keep 75% still keeps all 3, so it is no safe level
        single += _single(name, i, "K", 3, [(1.0, 3, 0.0, 0.0), (0.75, 3, 0.0, 0.0),
                                            (0.5, 2, 0.05, 0.2), (0.1, 1, 0.3, 0.5)])
    all_rows = (_all("A", 48, [(1.0, 48, 0.0, 0.0), (0.5, 24, 0.1, 0.05), (0.1, 6, 0.4, 0.8)])
                + _all("B", 48, [(1.0, 48, 0.0, 0.0), (0.5, 24, 0.1, 0.03), (0.1, 6, 0.4, 0.4)])
                + _all("K", 9, [(1.0, 9, 0.0, 0.0), (0.75, 9, 0.0, 0.0), (0.1, 3, 0.3, 0.6)]))
    return single, all_rows


@pytest.fixture()
def found():
    single, all_rows = _tables()
    return report.findings(single=single, all_layers=all_rows)


def _bullet(md: str, head: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(f"- **{head}"))


def test_levels_that_keep_the_full_rank_are_not_safe_levels():
    single, _ = _tables()
    safe = report.safe_table(single)
    k = safe[safe["cut"] == "K"]
    assert k["safe_level"].isna().all() and k["safe_rank"].isna().all()
    assert (k["safe_norm_loss"] == 0).all()
    a = safe[safe["cut"] == "A"]
    assert a["safe_level"].tolist() == [0.25] * 3 and a["safe_rank"].tolist() == [4] * 3


def test_cut_sentence_names_the_best_and_the_ranks(found):
    md = report.summary_markdown(found, title="t")
    s = _bullet(md, "Cuts")
    assert s.startswith("- **Cuts, one layer at a time.** `A` truncates best")
    assert "median safe level keep 25.0%, median rank 4 of 16, over 3 of 3 layers" in s
    assert "`K` is the least compressible (0.0%: no layer has a truncating safe level)" in s
    assert "At the most aggressive level (keep 10.0%), 0 of 3 layers" in s
    assert "75.0%" not in s  # the level that truncates nothing is never called safe
    assert "| `K` | 0.0% | none | 0 of 3 |" in md


def test_all_layers_sentence_hardest_cut_is_the_lowest_accuracy(found):
    s = _bullet(report.summary_markdown(found, title="t"), "All layers")
    # no cut is safe below the full rank (K's 75% keeps all 9): ties at safe norm loss 0
    assert "No cut keeps the accuracy within 1.0% at any truncating level swept" in s
    assert "the most robust cut is `B` (accuracy 50.0%, rank 6 of 48" in s
    assert "the hardest `A` (accuracy 10.0%, rank 6 of 48" in s


def test_all_layers_ties_are_all_named():
    single, all_rows = _tables()
    for r in all_rows:
        if r["level"] == 0.1 and r["cut"] in ("A", "B"):
            r["accuracy"], r["accuracy_drop"] = 0.2, BASE - 0.2
    s = _bullet(report.summary_markdown(report.findings(single=single, all_layers=all_rows),
                                        title="t"), "All layers")
    assert "the hardest `A` and `B` (accuracy 20.0%)" in s
    assert "most robust cut is `K` (accuracy 30.0%, rank 3 of 9" in s


def test_all_layers_safe_level_with_its_rank():
    single, all_rows = _tables()
    for r in all_rows:
        if r["cut"] == "B" and r["level"] == 0.5:
            r["accuracy_drop"], r["accuracy"] = 0.005, BASE - 0.005
    f = report.findings(single=single, all_layers=all_rows)
    s = _bullet(report.summary_markdown(f, title="t"), "All layers")
    assert "Along `B` every layer can be truncated to keep 50.0% of its singular values, " \
           "rank 24 of 48 summed over layers" in s


@pytest.mark.parametrize("values,verdict", [
    ([0.1, 0.3, 0.2, 0.25], "no clear trend"),             # the cnn4 case: rho +0.4, n = 4
    ([0.01 * i for i in range(12)], "grows"),
    ([1 - 0.01 * i for i in range(12)], "shrinks"),
])
def test_depth_trend_has_its_evidence(values, verdict):
    t = depth_trend(range(len(values)), values)
    assert t["n"] == len(values) and t["verdict"] == verdict
    if verdict == "no clear trend":
        assert t["p_value"] > 0.05 and t["spearman"] == pytest.approx(0.4)
    else:
        assert t["p_value"] < 0.01 and abs(t["spearman"]) == pytest.approx(1.0)
        lo, hi = t["ci"]
        assert lo <= t["spearman"] <= hi
    assert depth_trend(range(len(values)), values) == t  # seeded: the same numbers again


def test_exact_permutation_p_value():
    # n = 4, rho = +0.4: |rho| >= 0.4 in 18 of the 24 orderings
    assert depth_trend([0, 1, 2, 3], [0.1, 0.3, 0.2, 0.25])["p_value"] == pytest.approx(18 / 24)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 2, 3], [1, 1, 1]))


def test_layers_sentence_states_no_clear_trend_with_n(found):
    s = _bullet(report.summary_markdown(found, title="t"), "Layers")
    assert "The most compressible layer is `l2`" in s and "the least is `l0`" in s
    assert "no clear trend with depth" in s and "n = 3 layers" in s


def test_stages_of_a_resnet():
    layers = [dict(layer=n, index=i, mean_safe_norm_loss=v) for i, (n, v) in enumerate(
        [("conv1", 0.1), ("layer1.0.conv1", 0.2), ("layer1.0.conv2", 0.4),
         ("layer2.0.conv1", 0.5), ("layer2.0.downsample.0", 0.7)])]
    st = stage_summary(layers)
    assert [(s["stage"], s["layers"]) for s in st] == [("stem", 1), ("layer1", 2),
                                                       ("layer2", 2)]
    assert st[1]["mean"] == pytest.approx(0.3) and st[2]["max"] == pytest.approx(0.7)
    assert stage_summary([dict(layer="block1.conv", index=0, mean_safe_norm_loss=0.1)]) == []


def test_percent_never_shows_minus_zero():
    assert report.percent(-1e-9) == "0.0%" and report.percent(-0.0) == "0.0%"
    assert report.percent(-0.0123) == "-1.2%" and report.percent(float("nan")) == "n/a"


def test_rerender_from_findings_json_fixes_the_old_sentences(tmp_path):
    old = {"baseline_accuracy": 0.9, "threshold": 0.01, "n": 100, "depth_correlation": 0.4,
           "cuts": [{"cut": "A", "mean_safe_norm_loss": 0.1, "median_safe_level": 0.5,
                     "layers_safe_at_min_level": 0, "layers": 4, "mean_worst_drop": 0.3},
                    {"cut": "K", "mean_safe_norm_loss": 0.0, "median_safe_level": 0.75,
                     "layers_safe_at_min_level": 0, "layers": 4, "mean_worst_drop": 0.3}],
           "layers": [{"layer": f"b{i}", "index": i, "mean_safe_norm_loss": v,
                       "best_cut": "A", "best_safe_norm_loss": v, "mean_worst_drop": 0.1}
                      for i, v in enumerate([0.05, 0.13, 0.10, 0.12])],
           "all_layers": [{"cut": c, "safe_level": 0.75, "safe_norm_loss": nl,
                           "safe_compression": 1.2, "min_level": 0.05,
                           "min_level_accuracy": acc, "min_level_norm_loss": 0.5}
                          for c, nl, acc in [("A", 0.06, 0.17), ("B", 0.0, 0.276),
                                             ("C", 0.0, 0.094)]]}
    (tmp_path / "findings.json").write_text(json.dumps(old))
    (tmp_path / "summary.md").write_text("# Old title\n\n## Setup\n\n- Model x.\n\n## Findings\n"
                                         "\nold\n\n## Plots\n\n![Recovery](recovery.png)\n")
    md = open(rerender(tmp_path)).read()
    assert md.startswith("# Old title") and "- Model x." in md and "(recovery.png)" in md
    assert "the hardest `C` (accuracy 9.4%)" in md and "most robust cut is `B`" in md
    assert "no clear trend with depth" in md and "n = 4 layers" in md
    assert "| `K` | 0.0% | none |" in md  # its 75% level truncated nothing
    f = upgrade_findings(old)
    assert "depth_correlation" not in f and f["depth_trend"]["verdict"] == "no clear trend"
    assert open(rerender(tmp_path)).read() == md  # idempotent: the note is not repeated
