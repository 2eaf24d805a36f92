"""Tests of tnconv.study: model-wide truncation, the prefix cache, sweeps and resuming."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tnconv
from tnconv.evaluation.prefix import PrefixRunner
from tnconv.records import RowLog
from tnconv.study.sweep import SWEEP_FIELDS
from tnconv.truncation import truncate


def _mixed_model() -> nn.Module:
    """Strided, dilated, grouped, depthwise and 1-D convolutions plus a Linear layer."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, dilation=2, padding=2, groups=2),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise
        nn.Conv2d(8, 12, 1),
        nn.Flatten(2),
        nn.Conv1d(12, 6, 5, padding=2),
        nn.Flatten(),
        nn.Linear(6 * 64, 5),
    )


def _tiny_cnn() -> nn.Module:
    torch.manual_seed(1)
    model = tnconv.cnn4(4, in_channels=1, widths=(4, 6, 8, 8))
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        # centre and scale the classifier so that predictions depend on the input
        fc = model.classifier.fc
        feats = []
        hook = fc.register_forward_hook(lambda mod, inp, out: feats.append(inp[0]))
        model.eval()(torch.randn(64, 1, 16, 16, generator=torch.Generator().manual_seed(3)))
        hook.remove()
        f = feats[0]
        fc.weight.copy_(torch.randn_like(fc.weight) / (f.std(0).mean() + 1e-6))
        fc.bias.copy_(-(f.mean(0) @ fc.weight.T))
    return model.eval()


def _data(n: int = 96, size: int = 16, classes: int = 4, channels: int = 1, model=None):
    """Random images; labels: ``model``'s predictions on 3 of 4 images (default the tiny CNN's),
    so the baseline is good and truncation visibly costs accuracy."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, channels, size, size, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    if channels == 1:
        with torch.no_grad():
            pred = (model or _tiny_cnn())(x).argmax(1)
        y = torch.where(torch.arange(n) % 4 == 0, y, pred)
    return x, y


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _full_eval(model: nn.Module, data, batch_size: int) -> dict:
    x, y = data
    correct, loss = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(y), batch_size):
            logits = model(x[i:i + batch_size]).float()
            correct += int((logits.argmax(1) == y[i:i + batch_size]).sum())
            loss += float(F.cross_entropy(logits, y[i:i + batch_size], reduction="sum"))
    return {"accuracy": correct / len(y), "loss": loss / len(y)}


def _state(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


# -- truncate_model -------------------------------------------------------------------------

def test_truncate_model_leaves_input_unchanged_and_matches_truncate():
    model = _mixed_model()
    before = _state(model)
    lin, lin_report = tnconv.truncate_model(model, cut="out|in", keep=0.5,
                                            layers=["8"], include_linear=True)
    ref_w, ref = truncate(model[8].weight.detach(), "out|in", keep=0.5)
    assert [r["layer"] for r in lin_report] == ["8"] and lin_report[0]["rank"] == ref.rank
    assert torch.equal(lin[8].weight, ref_w) and torch.equal(lin[0].weight, model[0].weight)
    small, report = tnconv.truncate_model(model, cut="out|in,kh,kw", keep=0.5,
                                          layers=["0", "2", "3", "4"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert [r["layer"] for r in report] == ["0", "2", "3", "4"]
    for row in report:
        w = model.get_submodule(row["layer"]).weight.detach()
        ref_w, ref = truncate(w, "out|in,kh,kw", keep=0.5)
        assert torch.equal(small.get_submodule(row["layer"]).weight, ref_w)
        for field, value in ref.as_dict().items():
            assert row[field] == value, (row["layer"], field)
    # the depthwise kernel is [8, 1, 3, 3]: 8 x 9 matrix, rank 8 -> 4
    assert report[2]["shape"] == "8x1x3x3" and report[2]["rank"] == 4
    # untouched layers stay identical, and the truncated model still runs
    assert torch.equal(small[6].weight, model[6].weight)
    assert small(torch.randn(2, 3, 16, 16)).shape == (2, 5)


def test_truncate_model_all_kinds_and_per_layer_criteria():
    model = _mixed_model()
    small, report = tnconv.truncate_model(
        model, cut={"6": "out|in,k", "8": "out|in", "*": "out,kh|in,kw"},
        max_bond={"0": 2, "[2-6]": 3}, max_error={"8": 0.5}, include_linear=True)
    assert [r["layer"] for r in report] == ["0", "2", "3", "4", "6", "8"]
    assert [r["kind"] for r in report][-2:] == ["Conv1d", "Linear"]
    by = {r["layer"]: r for r in report}
    assert by["0"]["rank"] == 2 and by["2"]["rank"] == 3
    s = tnconv.spectrum(model[8].weight.detach(), "out|in")
    assert by["8"]["rank"] == tnconv.rank_for_error(s, 0.5) < by["8"]["full_rank"]
    assert by["8"]["rel_error"] <= 0.5
    assert by["6"]["cut"] == "out|in,k"


def test_truncate_model_sequence_of_cuts_reports_combined_error():
    model = _mixed_model()
    cuts = ["out|in,kh,kw", "out,kh|in,kw"]
    small, report = tnconv.truncate_model(model, cut=cuts, keep=0.5, layers="0")
    w = model[0].weight.detach()
    w1, r1 = truncate(w, cuts[0], keep=0.5)
    w2, r2 = truncate(w1, cuts[1], keep=0.5)
    assert torch.equal(small[0].weight, w2)
    row = report[0]
    assert row["cut"] == "out|in,kh,kw ; out,kh|in,kw" and row["ranks"] == [r1.rank, r2.rank]
    ref = float((w.double() - w2.double()).norm() / w.double().norm())
    assert row["rel_error"] == pytest.approx(ref, rel=1e-10)
    assert row["rel_error"] > max(r1.rel_error, r2.rel_error) * 0.999
    assert row["norm_loss"] == pytest.approx(1 - float(w2.double().norm() / w.double().norm()))


def test_truncate_model_per_layer_cutoff_with_one_cutoff_mode():
    # cutoff_mode goes with the layers that have a cutoff; the others use their own criteria
    model = _mixed_model()
    _, report = tnconv.truncate_model(model, cut="out|in,kh,kw", layers=["0", "2"],
                                      cutoff={"2": 0.5}, cutoff_mode="rel", keep=0.5)
    s = tnconv.spectrum(model[2].weight.detach(), "out|in,kh,kw")
    assert report[0]["rank"] == 4 and report[0].get("cutoff_mode") is None
    assert report[1]["rank"] == min(4, int((s > 0.5 * s[0]).sum()))
    with pytest.raises(ValueError, match="without cutoff"):  # no cutoff anywhere: still an error
        tnconv.truncate_model(model, cut="out|in,kh,kw", layers="0", cutoff_mode="rel")


@pytest.mark.parametrize("kwargs", [dict(keep={"layer9": 0.5}),
                                    dict(keep=0.5, cut={"0": "out|in,kh,kw", "9*": "out|in"}),
                                    dict(max_bond={"8": 2})])  # Linear, not a candidate
def test_truncate_model_mapping_pattern_matching_no_layer(kwargs):
    kwargs.setdefault("cut", "out|in,kh,kw")
    with pytest.raises(ValueError, match="matches no layer"):
        tnconv.truncate_model(_mixed_model(), layers=["0", "2"], **kwargs)


def test_layer_predicates_see_the_given_model():
    model = _mixed_model()
    _, report = tnconv.truncate_model(model, cut="out|in,kh,kw", keep=0.5,
                                      layers=lambda _, m: m is model[2])
    assert [r["layer"] for r in report] == ["2"]
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 5, (8,))
    rows = tnconv.sweep(model, (x, y), cuts=["out|in,kh,kw"], levels=[0.5], progress=False,
                        layers=lambda _, m: m is model[4])
    assert [r["layer"] for r in rows] == ["4"]


def test_truncate_model_inplace_and_predicate():
    model = _mixed_model()
    before = _state(model)
    out, report = tnconv.truncate_model(model, cut="out|in,kh,kw", max_bond=1, inplace=True,
                                        layers=lambda _, m: isinstance(m, nn.Conv2d)
                                        and m.groups == 1)
    assert out is model
    assert [r["layer"] for r in report] == ["0", "4"]
    assert not torch.equal(model[0].weight, before["0.weight"])
    assert torch.equal(model[2].weight, before["2.weight"])


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(cut="out|in,kh,kw", keep=1.5), ValueError, "keep"),
    (dict(cut="out|in,kh,kw", layers="nope*"), ValueError, "matches no layer"),
    (dict(cut="out|x", keep=0.5), ValueError, "does not fit layer '0'"),
    (dict(cut=3, keep=0.5), TypeError, "cut must be"),
    (dict(cut="out|in,kh,kw", keep={"0": "a"}), TypeError, "keep"),
])
def test_truncate_model_bad_arguments(kwargs, exc, words):
    model = _mixed_model()
    before = _state(model)
    with pytest.raises(exc, match=words):
        tnconv.truncate_model(model, layers=kwargs.pop("layers", ["0", "2"]), **kwargs)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# -- prefix cache ----------------------------------------------------------------------------

def test_prefix_runner_equals_full_evaluation_cnn4():
    model, data = _tiny_cnn(), _data()
    run = PrefixRunner(model, data, batch_size=32)
    assert run.mode == "prefix"
    full = _full_eval(model, data, 32)
    for _, m in tnconv.conv_layers(model):
        s = run.stage_of(m)
        res = run.evaluate_from(s)
        assert res["accuracy"] == full["accuracy"]
        assert res["loss"] == pytest.approx(full["loss"], rel=1e-6)
    # a changed kernel changes the suffix result exactly as it changes the full result
    with torch.no_grad():
        model.block3.conv.weight.mul_(-0.5)
    ref = _full_eval(model, data, 32)
    res = run.evaluate_from(run.stage_of(model.block3.conv))
    assert res["accuracy"] == ref["accuracy"] and res["loss"] == pytest.approx(ref["loss"])
    assert ref["loss"] != pytest.approx(full["loss"])


def test_prefix_runner_torchvision_resnet_flatten_case():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(num_classes=4).eval()
    data = _data(6, 16, 4, 3)
    run = PrefixRunner(model, data, batch_size=4)
    assert run.mode == "prefix" and run.stages[-1][0] == "fc"
    assert run.stage_of(model.layer3[1].conv2) == [n for n, _ in run.stages].index("layer3.1")
    assert run.evaluate_from(run.stage_of(model.layer4[0].conv1)) == run.evaluate()


class _Residual(nn.Module):
    """Its forward is not its children in sequence: the runner must fall back."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 16 * 16, 4))

    def forward(self, x):
        return self.head(self.conv(x) + x)


def test_prefix_runner_falls_back_to_full_evaluation():
    torch.manual_seed(0)
    model, data = _Residual().eval(), _data()
    run = PrefixRunner(model, data, batch_size=32)
    assert run.mode == "full"
    assert run.evaluate_from(0)["accuracy"] == _full_eval(model, data, 32)["accuracy"]
    rows = tnconv.sweep(model, data, cuts=["out|in,kh,kw"], levels=[0.5], progress=False,
                        batch_size=32)
    ref, _ = tnconv.truncate_model(model, cut="out|in,kh,kw", keep=0.5)
    assert rows[0]["accuracy"] == _full_eval(ref, data, 32)["accuracy"]


def test_prefix_runner_cache_budget_falls_back():
    model, data = _tiny_cnn(), _data()
    run = PrefixRunner(model, data, batch_size=32, cache_bytes=1)
    assert run.mode == "prefix" and not run.advance(4)
    assert run.evaluate_from(4) == run.evaluate()


# -- sweeps ----------------------------------------------------------------------------------

LEVELS = (1.0, 0.5, 0.25, 0.1)


def test_sweep_refuses_to_resume_rows_of_another_sweep(tmp_path):
    model, data = _tiny_cnn(), _data()
    kw = dict(cuts=["out|in,kh,kw"], levels=(1.0, 0.25), batch_size=32, progress=False)
    out = tmp_path / "all.csv"
    tnconv.sweep(model, data, mode="all", layers=["block2.conv", "block3.conv"], out=out, **kw)
    with pytest.raises(ValueError, match="over 2 layers, this sweep selects 1"):
        tnconv.sweep(model, data, mode="all", layers=["block2.conv"], out=out, **kw)
    other = _tiny_cnn()
    with torch.no_grad():
        other.classifier.fc.weight.mul_(-1)  # another model: another baseline
    with pytest.raises(ValueError, match="holds rows of another sweep"):
        tnconv.sweep(other, data, mode="all", layers=["block2.conv", "block3.conv"], out=out,
                     **kw)
    # the same sweep resumes (nothing left to do)
    again = tnconv.sweep(model, data, mode="all", layers=["block2.conv", "block3.conv"],
                         out=out, **kw)
    assert again.info["rows_new"] == 0 and len(again) == 2


def _brute_force_single(model, data, cuts, levels, batch_size):
    rows = []
    for name, _ in tnconv.conv_layers(model):
        for cut in cuts:
            for level in levels:
                small, rep = tnconv.truncate_model(model, cut=cut, keep=level, layers=name)
                if rep[0]["rank"] == rep[0]["full_rank"]:
                    small = model  # keeping every singular value leaves the kernel as it is
                rows.append({**rep[0], **_full_eval(small, data, batch_size),
                             "layer": name, "level": level})
    return rows


def test_sweep_single_equals_brute_force_loop():
    model, data = _tiny_cnn(), _data()
    cuts = ["out|in,kh,kw", "out,kh|in,kw", "out,in|kh,kw"]
    rows = tnconv.sweep(model, data, cuts=cuts, levels=LEVELS, batch_size=32, progress=False)
    ref = _brute_force_single(model, data, cuts, LEVELS, 32)
    assert rows.info["eval_mode"] == "prefix"
    assert len(rows) == len(ref) == 4 * 3 * 4
    base = _full_eval(model, data, 32)
    for row, r in zip(rows, ref):
        assert list(row) == list(SWEEP_FIELDS)
        assert (row["layer"], row["cut"], row["level"]) == (r["layer"], r["cut"], r["level"])
        for f in ("rank", "full_rank", "rel_error", "norm_loss", "params_after", "shape"):
            assert row[f] == r[f], f
        assert row["accuracy"] == r["accuracy"]
        assert row["loss"] == pytest.approx(r["loss"], rel=1e-6)
        assert row["baseline_accuracy"] == base["accuracy"]
    # the sweep really changes accuracy somewhere (a test that can fail)
    assert len({r["accuracy"] for r in rows}) > 1
    # and used its shortcuts: one SVD per (layer, distinct matrix), fewer evaluations than rows
    # (block1 has one input channel, so "out|in,kh,kw" and "out,in|kh,kw" are one matrix)
    assert rows.info["svds"] == 4 * 3 - 1 and rows.info["evaluations"] < len(rows)


def test_sweep_fast_equals_naive_and_input_unchanged():
    model, data = _tiny_cnn(), _data()
    before = _state(model)
    kw = dict(cuts="all", levels=(1.0, 0.5, 0.1), batch_size=48, progress=False,
              layers=["block2.conv", "block4.*"])
    fast = tnconv.sweep(model, data, **kw)
    naive = tnconv.sweep(model, data, use_prefix=False, reuse_svd=False, **kw)
    assert naive.info["eval_mode"] == "full" and naive.info["svds"] == len(naive)
    assert naive.info["evaluations"] == len(naive) + 1  # every row, plus the baseline
    assert len(fast) == 2 * 7 * 3
    for a, b in zip(fast, naive):
        assert a == b
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_sweep_all_layers_equals_truncate_model():
    model, data = _tiny_cnn(), _data()
    cuts = ["out|in,kh,kw", "out,kw|in,kh"]
    rows = tnconv.sweep(model, data, cuts=cuts, levels=(0.5, 0.25), mode="all",
                        batch_size=32, progress=False, layers="block[234].conv")
    assert [(r["cut"], r["level"]) for r in rows] == [(c, lv) for c in cuts for lv in (0.5, 0.25)]
    for row in rows:
        small, rep = tnconv.truncate_model(model, cut=row["cut"], keep=row["level"],
                                           layers="block[234].conv")
        ref = _full_eval(small, data, 32)
        assert row["layer"] == "(all)" and row["n_layers"] == 3
        assert row["accuracy"] == ref["accuracy"]
        assert row["loss"] == pytest.approx(ref["loss"], rel=1e-6)
        assert row["rank"] == sum(r["rank"] for r in rep)
        assert row["params_after"] == sum(r["params_after"] for r in rep)
        ws = [model.get_submodule(r["layer"]).weight.detach().double() for r in rep]
        wt = [small.get_submodule(r["layer"]).weight.detach().double() for r in rep]
        num = sum(float((a - b).pow(2).sum()) for a, b in zip(ws, wt))
        den = sum(float(a.double().pow(2).sum()) for a in ws)
        assert row["rel_error"] == pytest.approx(math.sqrt(num / den))


@pytest.mark.parametrize("ext", [".csv", ".jsonl"])
def test_sweep_resume_after_interruption(tmp_path, ext):
    model, data = _tiny_cnn(), _data()
    kw = dict(cuts=["out|in,kh,kw", "out,kh|in,kw"], levels=LEVELS, batch_size=32,
              progress=False)
    whole = tnconv.sweep(model, data, out=tmp_path / f"whole{ext}", **kw)

    out = tmp_path / f"part{ext}"
    seen = []

    def stop(row):
        seen.append(row)
        if len(seen) == 13:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tnconv.sweep(model, data, out=out, callback=stop, **kw)
    with open(out, "a") as fh:  # an interrupted write leaves a partial last line
        fh.write("single,block3.conv,2,Conv2d,8x6x3x3,out|in")
    resumed = tnconv.sweep(model, data, out=out, **kw)
    assert resumed.info["rows_new"] == len(whole) - 13
    assert len(resumed) == len(whole) == 32
    for a, b in zip(resumed, whole):
        assert a == b
    # the file holds exactly the rows, once each, and reads back equal
    again = RowLog(out, SWEEP_FIELDS, string_fields=["layer", "cut", "mode", "kind",
                                                     "shape", "criterion"]).read()
    assert again == list(whole)
    # a complete run resumed does nothing
    assert tnconv.sweep(model, data, out=out, **kw).info["rows_new"] == 0
    if ext == ".jsonl":
        assert all(json.loads(line) for line in out.read_text().splitlines())


def test_sweep_criteria_and_argument_errors():
    model, data = _tiny_cnn(), _data()
    rows = tnconv.sweep(model, data, cuts=["out|in,kh,kw"], levels=[1, 2], criterion="max_bond",
                        layers="block1.conv", progress=False)
    assert [r["rank"] for r in rows] == [1, 2] and rows[0]["criterion"] == "max_bond"
    rows = tnconv.sweep(model, data, cuts=["out|in,kh,kw"], levels=[0.3], criterion="max_error",
                        layers="block4.conv", progress=False)
    assert rows[0]["rel_error"] <= 0.3
    bad = [dict(mode="each"), dict(criterion="rank"), dict(levels=[0.5, 0.5]),
           dict(levels=[2.0]), dict(cuts="out|in,kh,kw"), dict(out="x.txt"),
           dict(cuts=["out|in,kh"])]
    for kw in bad:
        with pytest.raises((ValueError, TypeError)):
            tnconv.sweep(model, data, progress=False, **kw)


def test_sweep_integer_labels_of_any_dtype():
    model, (x, y) = _tiny_cnn(), _data(32)
    kw = dict(cuts=["out|in,kh,kw"], levels=[0.5], layers="block2.conv", progress=False)
    ref = tnconv.sweep(model, (x, y), **kw)
    assert tnconv.sweep(model, (x, y.int()), **kw) == ref
    with pytest.raises(TypeError, match="labels"):
        tnconv.sweep(model, (x, y.float()), **kw)


def test_sweep_duplicate_cuts_rejected():
    model, data = _tiny_cnn(), _data(32)
    with pytest.raises(ValueError, match="distinct"):
        tnconv.sweep(model, data, cuts=["out|in,kh,kw", "out | in,kh,kw"], levels=[0.5],
                     layers="block1.conv", progress=False)


def test_projector_keeps_rank():
    from tnconv.study.retrain import Projector

    model = _mixed_model()
    small, rep = tnconv.truncate_model(model, cut="out,kh|in,kw", max_bond=3, layers="0")
    for projection in ("svd", "subspace"):
        work = copy.deepcopy(small)
        with torch.no_grad():
            work[0].weight.add_(0.1 * torch.randn_like(work[0].weight))
        Projector(work, rep, projection=projection)(work)
        s = tnconv.spectrum(work[0].weight.detach(), "out,kh|in,kw")
        assert float(s[3] / s[0]) < 1e-5, projection
    with pytest.raises(ValueError, match="projection"):
        Projector(small, rep, projection="qr")


# -- run_study: a run folder belongs to one model ---------------------------------------------

def _tiny_auto(out):
    """The tiny profile, its model kept in the (temporary) checkpoint cache."""
    import dataclasses

    from tnconv.study.profiles import PROFILE_SETS

    cfg = PROFILE_SETS["cnn4"].profiles["tiny"]
    return dataclasses.replace(cfg, train="auto", out=str(out), progress=False, retrain_epochs=0,
                               test_subset=200, levels=(1.0, 0.5))


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_run_study_refuses_a_folder_of_another_model(fmnist_test, tmp_path, monkeypatch):
    from tnconv.checkpoints import load_checkpoint, save_checkpoint
    from tnconv.study.experiment import checkpoint_plan, run_study

    monkeypatch.setenv("TNCONV_CACHE", str(tmp_path / "cache"))
    cfg = _tiny_auto(tmp_path / "run")
    run_study(cfg)
    first = _snapshot(tmp_path / "run")
    assert "fingerprint.json" in first and "atlas.csv" in first
    run_study(cfg)  # the same model: the run resumes (the sweeps recompute no row)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["sweep_single"]["rows_new"] == 0
    before = _snapshot(tmp_path / "run")
    # the cached model changes (as when another command retrains it)
    path, _ = checkpoint_plan(cfg, torch.device("cpu"))
    model, meta = load_checkpoint(path)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    save_checkpoint(model, path, meta=meta)
    with pytest.raises(ValueError, match="belongs to another run.*model weights"):
        run_study(cfg)
    assert _snapshot(tmp_path / "run") == before  # nothing overwritten
    # other settings into the same folder are refused too, before any training
    import dataclasses

    with pytest.raises(ValueError, match="levels"):
        run_study(dataclasses.replace(cfg, levels=(1.0, 0.25)))
    # a folder of an older run (no fingerprint) is not reused
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "atlas.csv").write_text("x\n")
    with pytest.raises(ValueError, match="no fingerprint.json"):
        run_study(dataclasses.replace(cfg, out=str(tmp_path / "old")))


def test_sweep_defaults_match_the_signature():
    """The engine's option table (shared with the Ray executor) is sweep's signature."""
    import inspect

    from tnconv.study.sweep import sweep as sweep_fn
    from tnconv.study.sweep_engine import SWEEP_DEFAULTS

    params = {k: p.default for k, p in inspect.signature(sweep_fn).parameters.items()
              if p.kind is p.KEYWORD_ONLY}
    assert params == SWEEP_DEFAULTS
