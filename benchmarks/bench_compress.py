"""Accuracy against budget of ``tnconv.compress`` per allocation mode, before/after fine-tuning,
against the baselines a practitioner would pick instead (structured pruning, tensorly-torch).

For each model (cnn4, resnet20, trained on Fashion-MNIST by ``train_or_load``), each budget
(``params=0.5, 0.25, 0.1`` of the conv parameters) and each allocation mode (``uniform``,
``energy``, ``vbmf``, ``sensitivity`` (compress's default), and ``sensitivity-weights``: the
sensitivity mode with ``fit="weights"``, i.e. without the data-fitted factors), in the same run:

* ``tnconv.compress(model, sens, params=budget, allocate=mode)``: sensitivity data ``sens`` =
  a fixed 1000-image subset of the test split; the latency of the dense and the compressed
  model (batch 256) comes from the report;
* the accuracy on a *disjoint* held-out part of the test split (5000 other images), of the
  dense model, the compressed one, and the compressed one after ``--epochs`` (default one)
  epochs of fine-tuning with ``tnconv.fit`` (what ``compress(..., epochs=k, train_data=...)``
  runs, with the same defaults) on a fixed subset of the training split (its size is in the
  JSON); with ``--distill``, the dense model is the teacher of every fine-tuning (tnconv's and
  the baselines' alike: ``fit(..., teacher=dense, distill=W, temperature=T)``);
* with tensorly-torch installed, its uniform Tucker (``tltorch.FactorizedConv.from_conv``,
  ``factorization="tucker"``, ``implementation="factorized"``, ``fixed_rank_modes="spatial"``,
  each layer's rank fraction the largest that keeps the layer within the budget) as an outside
  reference, fine-tuned alike;
* with torch-pruning installed, Torch-Pruning's DepGraph structured channel pruning
  (``tp-l1``: L1 magnitude importance; ``tp-taylor``: first-order Taylor importance from the
  gradients of a few fine-tuning batches), the same ratio in every layer
  (``global_pruning=False``), the final classifier kept whole, the ratio found by bisection so
  that the remaining conv parameters are within the budget and as close to it as the channel
  counts allow; fine-tuned alike, its conv FLOPs (at the input size) and latency measured.

The goals are evaluated from the rows: (a) sensitivity >= the best of uniform, energy and vbmf
at every budget before fine-tuning; (b) after fine-tuning at 25 %, within 1 point of dense;
(c) latency ratio at 25 % <= 0.8; and those of issue 24: (d) resnet20 at 25 % within 1.0 point
of dense after at most 5 epochs and ahead of Torch-Pruning, cnn4 at 10 % within 1.0 point after
at most 3 epochs; (e) at every budget, tnconv's default (``sensitivity``) at least as accurate
after fine-tuning as the best baseline (Torch-Pruning, tensorly-torch) of the same epochs and
distillation. A line per goal says PASS, FAIL or n/a (not measured).

Run::

    python benchmarks/bench_compress.py --models cnn4    # results/bench_compress_cpu_cnn4.json
    python benchmarks/bench_compress.py --models resnet20 --threads 1
    python benchmarks/bench_compress.py --models resnet20 --epochs 5 --distill
    python benchmarks/bench_compress.py --quick                  # a tiny smoke run

Writes the JSON after every row (a long run leaves what it has) and a PNG next to it:
accuracy against the achieved parameter fraction, one line per mode, one panel per model,
solid before and dashed after fine-tuning.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from _common import (
    RESULTS,
    SPLIT,
    command_line,
    conv_params,
    environment,
    split_data,
    write_result,
)
from torch import nn

import tnconv

# ---------------------------------------------------------------------- config
CONFIG: dict[str, Any] = {
    "dataset": "fashion-mnist",
    "models": ["cnn4", "resnet20"],
    "budgets": [0.5, 0.25, 0.1],      # params= fraction of the conv layers' parameters
    # "sensitivity-weights": the sensitivity mode with fit="weights" (no data-fitted factors)
    "modes": ["uniform", "energy", "vbmf", "sensitivity", "sensitivity-weights"],
    # the split (_common.SPLIT, shared with bench_datafit.py and compress_latency.py):
    "sens_images": SPLIT["sens_images"],          # test-split images for the sensitivity sweep
    "heldout_images": SPLIT["heldout_images"],    # other test-split images, for every accuracy
    "finetune_images": SPLIT["finetune_images"],  # training images of the fine-tuning (None: all)
    "finetune_epochs": 1,             # of every fine-tuned row (--epochs)
    "finetune": {},                   # extra tnconv.fit options (none: compress's defaults)
    "distill": None,                  # --distill: weight in [0, 1] of the dense teacher's KL
    "temperature": None,              # of the distillation (None: tnconv's default, 4.0)
    "tltorch": True,                  # add tensorly-torch's uniform Tucker where installed
    "pruning": ["l1", "taylor"],      # Torch-Pruning importances (rows tp-l1, tp-taylor)
    "taylor_batches": 4,              # fine-tuning batches whose gradients rank channels
    "taylor_batch_size": 128,         # images per such batch
    "cache": True,                    # compress(cache=): the sensitivity sweep is cached
    "seed": SPLIT["seed"],            # of the test-split permutation and the training subset
    "goal_budget": 0.25,
    "goal_points": 0.01,              # (b): within 1 point of dense
    "goal_latency": 0.8,              # (c): latency ratio at the goal budget
    # (d) of issue 24: the default mode within goal_points of dense after at most max_epochs
    # of fine-tuning, and (where ahead_of) more accurate than that baseline's best row
    "finetune_goals": [
        {"model": "resnet20", "budget": 0.25, "max_epochs": 5, "ahead_of": "torch-pruning"},
        {"model": "cnn4", "budget": 0.1, "max_epochs": 3, "ahead_of": None},
    ],
    "default_mode": "sensitivity",    # tnconv.compress's default allocation, for (d) and (e)
}
QUICK: dict[str, Any] = {
    "models": ["cnn4"], "budgets": [0.25], "modes": ["uniform", "sensitivity"],
    "sens_images": 200, "heldout_images": 500, "finetune_images": 512, "tltorch": False,
}
BASELINES = ("uniform", "energy", "vbmf")
#: The outside baselines of goal (e), by family: a row's mode -> its family (None: tnconv's).
OUTSIDE = {"tltorch-tucker": "tensorly-torch", "tp-l1": "torch-pruning",
           "tp-taylor": "torch-pruning"}
PRUNING_IMPORTANCES = ("l1", "taylor")
_INSTALL = 'pip install "tnconv[bench]"'
# -------------------------------------------------------------------------------------------


def _tucker_fraction(shape: Sequence[int], target: float) -> float:
    """The largest tltorch rank fraction whose Tucker factors have at most ``target`` params.

    The spatial modes keep their full rank (tltorch's ``fixed_rank_modes="spatial"``: a
    Tucker-2 of the channels); letting tltorch's fraction cut them too rounds a 3 x 3
    kernel's spatial ranks to 1 and leaves a near-useless model (chance accuracy on cnn4).
    """
    from tensorly.tucker_tensor import validate_tucker_rank

    frac = 1.0
    while frac > 1e-3:
        ranks = validate_tucker_rank(tuple(shape), rank=frac, fixed_modes=[2, 3])
        if math.prod(ranks) + sum(d * r for d, r in zip(shape, ranks)) <= target:
            return frac
        frac *= 0.97
    return frac


def tltorch_tucker(model: nn.Module, budget: float) -> tuple[nn.Module, list[str]]:
    """A copy of ``model`` with every conv a tensorly-torch Tucker conv within ``budget``.

    Layers tensorly-torch cannot convert stay dense and are returned by name.
    """
    import tensorly
    import tltorch

    tensorly.set_backend("pytorch")
    out = copy.deepcopy(model)
    failed = []
    for name, m in list(out.named_modules()):
        if not isinstance(m, nn.Conv2d):
            continue
        try:
            frac = _tucker_fraction(m.weight.shape, budget * m.weight.numel())
            new = tltorch.FactorizedConv.from_conv(
                m, rank=frac, factorization="tucker", implementation="factorized",
                fixed_rank_modes="spatial")
        except Exception as exc:  # noqa: BLE001 - reported, the layer stays dense
            failed.append(f"{name}: {type(exc).__name__}: {exc}"[:200])
            continue
        out = tnconv.replace_layer(out, name, new)
    return out, failed


def _finetune_and_eval(small: nn.Module, held: Any, tune: Any, cfg: dict[str, Any],
                       device: torch.device, finetune: bool, teacher: nn.Module | None = None
                       ) -> dict[str, Any]:
    """Held-out accuracy before and after fine-tuning ``small`` in place: the one fine-tuning
    of every row (``cfg["finetune_epochs"]`` epochs of ``tnconv.fit`` with compress's
    ``FINETUNE_DEFAULTS``; with ``cfg["distill"]``, ``teacher`` (the dense model) teaches)."""
    from tnconv.compression.api import FINETUNE_DEFAULTS
    from tnconv.train import evaluate, fit

    t0 = time.perf_counter()
    row: dict[str, Any] = {"accuracy_before": evaluate(small, held, device=device)["accuracy"]}
    row["eval_s"] = time.perf_counter() - t0
    row["accuracy_after"] = row["finetune_s"] = None
    distill = cfg["distill"] if finetune else None
    row.update(finetune_epochs=cfg["finetune_epochs"] if finetune else 0, distill=distill,
               temperature=None)
    if finetune:
        kd: dict[str, Any] = {}
        if distill is not None:
            if teacher is None:
                raise ValueError("distill asked for, but no teacher (the dense model) given")
            from tnconv.distillation import check_distillation

            _, row["temperature"] = check_distillation(distill, cfg["temperature"])
            kd = {"teacher": teacher, "distill": distill, "temperature": row["temperature"]}
        t0 = time.perf_counter()
        fit(small, tune, epochs=cfg["finetune_epochs"], device=device, progress=False,
            **{**FINETUNE_DEFAULTS, **cfg["finetune"]}, **kd)
        row["finetune_s"] = time.perf_counter() - t0
        row["accuracy_after"] = evaluate(small, held, device=device)["accuracy"]
    return row


def _latencies(model: nn.Module, small: nn.Module, input_size: Sequence[int] | None,
               device: torch.device) -> dict[str, Any]:
    """The dense and the small model's inference latencies (batch 256), timed together as
    compress's report times them (:func:`tnconv.compression.measure_latencies`)."""
    if input_size is None:
        return {}
    from tnconv.compression import measure_latencies

    dense_s, small_s = measure_latencies([model, small], input_size, batch=256, device=device)
    return {"latency_dense_s": dense_s, "latency_compressed_s": small_s,
            "latency_ratio": small_s / dense_s, "latency_batch": 256}


def run_cell(model: nn.Module, mode: str, budget: float, data: tuple[Any, Any, Any],
             cfg: dict[str, Any], device: torch.device, *, finetune: bool = True,
             progress: bool = False) -> dict[str, Any]:
    """One (mode, budget) cell: compress, measure on held-out, fine-tune, measure again."""
    from tnconv.compression import compress

    sens, held, tune = data
    t0 = time.perf_counter()
    allocate, _, fit = mode.partition("-")
    small, report = compress(model, sens, params=budget, allocate=allocate, device=device,
                             progress=progress, cache=cfg["cache"], latency=True,
                             fit=fit or "auto")
    row: dict[str, Any] = {
        "mode": mode, "budget": budget, "compress_s": time.perf_counter() - t0,
        "params_fraction": report.params_fraction, "flops_fraction": report.flops_fraction,
        "accuracy_sens_dense": report.accuracy_dense,
        "accuracy_sens_before": report.accuracy_compressed,
        "predicted_drop": report.predicted_drop,
        "latency_dense_s": report.latency_dense_s,
        "latency_compressed_s": report.latency_compressed_s,
        "latency_ratio": report.latency_ratio, "latency_batch": report.latency_batch,
        "methods": sorted({r.method for r in report.layers}), "fit": report.fit,
        "layers": [{"name": r.name, "method": r.method, "fit": r.fit, "cut": r.cut,
                    "ranks": list(r.ranks)} for r in report.layers],
    }
    row.update(_finetune_and_eval(small, held, tune, cfg, device, finetune, teacher=model))
    row["seconds"] = time.perf_counter() - t0
    return row


def run_tltorch_cell(model: nn.Module, budget: float, data: tuple[Any, Any, Any],
                     cfg: dict[str, Any], device: torch.device, *, finetune: bool = True,
                     input_size: Sequence[int] | None = None) -> dict[str, Any]:
    """The tensorly-torch uniform Tucker reference at ``budget``, measured as :func:`run_cell`."""
    t0 = time.perf_counter()
    small, failed = tltorch_tucker(model, budget)
    small = small.to(device)
    row: dict[str, Any] = {
        "mode": "tltorch-tucker", "budget": budget, "compress_s": time.perf_counter() - t0,
        "params_fraction": conv_params(small) / conv_params(model), "flops_fraction": None,
        "layers_left_dense": failed,
    }
    row.update(_latencies(model, small, input_size, device))
    row.update(_finetune_and_eval(small, data[1], data[2], cfg, device, finetune,
                                  teacher=model))
    row["seconds"] = time.perf_counter() - t0
    return row


# ------------------------------------------------------- structured pruning (Torch-Pruning)


def _have_pruning() -> str | None:
    """``None`` when torch-pruning imports, else the one-line note of the skipped rows."""
    try:
        import torch_pruning  # noqa: F401
    except ImportError:
        return f"torch-pruning not installed: its rows skipped ({_INSTALL})"
    return None


def conv_macs(model: nn.Module, input_size: Sequence[int]) -> int:
    """Multiply-adds of one image through the model's ``nn.Conv2d`` layers (as compress
    counts a dense layer's: output pixels x out x in / groups x kh x kw; biases not counted)."""
    total = 0

    def count(m: nn.Conv2d, _: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += out[0].numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, nn.Conv2d)]
    was = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_size, device=next(model.parameters()).device))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return total


def _importance(kind: str) -> Any:
    import torch_pruning as tp

    if kind == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    if kind == "taylor":
        return tp.importance.TaylorImportance()
    raise ValueError(f"unknown pruning importance {kind!r}; valid: "
                     f"{', '.join(PRUNING_IMPORTANCES)}")


def prune_channels(model: nn.Module, ratio: float, example: torch.Tensor, *,
                   importance: str = "l1", grad_batches: Any = ()) -> nn.Module:
    """A copy of ``model`` whose convolutions lose ``ratio`` of their output channels.

    Torch-Pruning's DepGraph (``MetaPruner``, ``global_pruning=False``: the same ratio in
    every layer, coupled channels of residual blocks pruned together); the last ``nn.Linear``
    (the classifier) keeps its outputs. ``importance``: ``"l1"`` (L1 norm of the weights) or
    ``"taylor"`` (``|w * dL/dw|``, from the cross-entropy gradients summed over
    ``grad_batches``, ``(x, y)`` pairs). ``example``: an input batch for tracing.
    """
    import torch_pruning as tp

    imp = _importance(importance)
    out = copy.deepcopy(model).eval()
    if importance == "taylor":
        out.zero_grad(set_to_none=True)
        for x, y in grad_batches:
            x, y = x.to(example.device), y.to(example.device)
            nn.functional.cross_entropy(out(x), y).backward()
    classifier = [m for m in out.modules() if isinstance(m, nn.Linear)][-1:]
    tp.pruner.MetaPruner(out, example, importance=imp, pruning_ratio=ratio,
                         global_pruning=False, ignored_layers=classifier).step()
    out.zero_grad(set_to_none=True)
    return out


def _pruned_fraction(model: nn.Module, example: torch.Tensor, ratio: float) -> float:
    """Conv params fraction after pruning ``ratio`` of the channels (any importance: with one
    ratio per layer, the channel counts do not depend on which channels go)."""
    return conv_params(prune_channels(model, ratio, example)) / conv_params(model)


def pruning_ratio_for_budget(model: nn.Module, example: torch.Tensor, budget: float, *,
                             steps: int = 14) -> tuple[float, float]:
    """``(ratio, params_fraction)``: the smallest uniform pruning ratio whose pruned model
    keeps at most ``budget`` of the conv parameters (bisection; the fraction is then the
    largest within the budget that the channel counts allow).

    Raises ``ValueError`` when ``budget`` is not in (0, 1) or no ratio below 1 meets it.
    """
    if not 0 < budget < 1:
        raise ValueError(f"budget must be a conv params fraction in (0, 1), got {budget}")
    lo, hi = 0.0, 0.5
    frac = _pruned_fraction(model, example, hi)
    while frac > budget:  # the ratios up to lo keep too much
        lo, hi = hi, (hi + 1) / 2
        if hi > 0.999:
            raise ValueError(f"no uniform pruning ratio keeps the conv params within {budget}")
        frac = _pruned_fraction(model, example, hi)
    for _ in range(steps):
        mid = (lo + hi) / 2
        mid_frac = _pruned_fraction(model, example, mid)
        if mid_frac <= budget:
            hi, frac = mid, mid_frac
        else:
            lo = mid
    return hi, frac


def _taylor_batches(tune: Any, cfg: dict[str, Any]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``taylor_batches`` batches of the fine-tuning set (a fixed order)."""
    out = []
    for x, y in tune.batches(cfg["taylor_batch_size"]):
        if len(out) == cfg["taylor_batches"]:
            break
        out.append((x, y))
    return out


def run_pruning_cell(model: nn.Module, importance: str, budget: float,
                     data: tuple[Any, Any, Any], cfg: dict[str, Any], device: torch.device, *,
                     finetune: bool = True, input_size: Sequence[int]) -> dict[str, Any]:
    """Torch-Pruning at ``budget`` (:func:`prune_channels` at the ratio of
    :func:`pruning_ratio_for_budget`), measured and fine-tuned as :func:`run_cell`."""
    t0 = time.perf_counter()
    example = torch.zeros(1, *input_size, device=device)
    ratio, frac = pruning_ratio_for_budget(model, example, budget)
    grads = _taylor_batches(data[2], cfg) if importance == "taylor" else ()
    small = prune_channels(model, ratio, example, importance=importance, grad_batches=grads)
    params = conv_params(small) / conv_params(model)
    if params > budget or not math.isclose(params, frac):
        raise RuntimeError(f"pruned to {params} of the conv params at ratio {ratio}, "
                           f"expected {frac} <= {budget}")
    row: dict[str, Any] = {
        "mode": f"tp-{importance}", "budget": budget, "compress_s": time.perf_counter() - t0,
        "params_fraction": params,
        "flops_fraction": conv_macs(small, input_size) / conv_macs(model, input_size),
        "pruning_ratio": ratio,
        "channels": {name: m.out_channels for name, m in small.named_modules()
                     if isinstance(m, nn.Conv2d)},
    }
    row.update(_latencies(model, small, input_size, device))
    row.update(_finetune_and_eval(small, data[1], data[2], cfg, device, finetune,
                                  teacher=model))
    row["seconds"] = time.perf_counter() - t0
    return row


def _have_tltorch() -> str | None:
    try:
        import tensorly  # noqa: F401
        import tltorch  # noqa: F401
    except ImportError as exc:
        return f"tensorly-torch not installed ({exc}); its reference skipped"
    return None


def run_model(model: nn.Module, name: str, data: tuple[Any, Any, Any], cfg: dict[str, Any],
              device: torch.device, *, finetune: bool = True, progress: bool = False,
              on_row: Any = None) -> tuple[float, list[dict[str, Any]], list[str]]:
    """Every (budget, mode) cell of one model: (dense held-out accuracy, rows, notes)."""
    from tnconv.train import evaluate

    model = model.to(device).eval()
    dense = evaluate(model, data[1], device=device)["accuracy"]
    print(f"{name}: dense accuracy on {len(data[1])} held-out images {dense:.4f}", flush=True)
    notes: list[str] = []
    skip = _have_tltorch() if cfg["tltorch"] else "tltorch reference not asked for"
    if skip and cfg["tltorch"]:
        notes.append(skip)
    no_pruning = _have_pruning() if cfg["pruning"] else "pruning not asked for"
    if no_pruning and cfg["pruning"]:
        notes.append(no_pruning)
        print(no_pruning, flush=True)
    outside = ([] if skip else ["tltorch-tucker"]) + (
        [] if no_pruning else [f"tp-{imp}" for imp in cfg["pruning"]])
    size = tuple(int(d) for d in data[0].images.shape[1:])
    rows = []
    for budget in cfg["budgets"]:
        for mode in list(cfg["modes"]) + outside:
            if mode in OUTSIDE:
                try:
                    if mode == "tltorch-tucker":
                        row = run_tltorch_cell(model, budget, data, cfg, device,
                                               finetune=finetune, input_size=size)
                    else:
                        row = run_pruning_cell(model, mode.removeprefix("tp-"), budget, data,
                                               cfg, device, finetune=finetune, input_size=size)
                except Exception as exc:  # noqa: BLE001 - an outside reference: note, go on
                    notes.append(f"{mode} at {budget}: {type(exc).__name__}: {exc}"[:300])
                    continue
            else:
                row = run_cell(model, mode, budget, data, cfg, device, finetune=finetune,
                               progress=progress)
            row = {"model": name, **row, "accuracy_dense": dense}
            rows.append(row)
            print(_row_line(row), flush=True)
            if on_row is not None:
                on_row(rows, notes)
    return dense, rows, notes


def _f(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


_HEAD = (f"{'model':<9} {'mode':<19} {'budget':>6} {'params':>7} {'flops':>6} {'dense':>6} "
         f"{'before':>6} {'after':>6} {'ep':>2} {'kd':>4} {'lat.r':>6} {'sec':>6}")


def _row_line(r: dict[str, Any]) -> str:
    return (f"{r['model']:<9} {r['mode']:<19} {r['budget']:>6.2f} {r['params_fraction']:>7.4f} "
            f"{_f(r['flops_fraction'], '6.3f'):>6} {r['accuracy_dense']:>6.4f} "
            f"{r['accuracy_before']:>6.4f} {_f(r['accuracy_after'], '6.4f'):>6} "
            f"{r.get('finetune_epochs', '-'):>2} {_f(r.get('distill'), '4.2f'):>4} "
            f"{_f(r.get('latency_ratio'), '6.3f'):>6} {r['seconds']:>6.1f}")


_TOL = 1e-9  # accuracies are counts / n: a gap of exactly one point must pass "within 1 point"


def _epochs(row: dict[str, Any], cfg: dict[str, Any]) -> int:
    return row.get("finetune_epochs", cfg["finetune_epochs"])


def _all(*flags: bool | None) -> bool | None:
    """False if any flag is False, else None if any is unknown, else True."""
    if any(f is False for f in flags):
        return False
    return None if any(f is None for f in flags) else True


def _best_outside(rows: Sequence[dict[str, Any]], cell: dict[str, Any], cfg: dict[str, Any],
                  family: str | None = None) -> dict[str, Any] | None:
    """The most accurate fine-tuned outside baseline (of ``family``, else any) of ``cell``'s
    model and budget, fine-tuned as ``cell`` was (same epochs and distillation)."""
    rivals = [r for r in rows if r["model"] == cell["model"] and r["budget"] == cell["budget"]
              and r["mode"] in OUTSIDE and (family is None or OUTSIDE[r["mode"]] == family)
              and r["accuracy_after"] is not None and _epochs(r, cfg) == _epochs(cell, cfg)
              and r.get("distill") == cell.get("distill")]
    return max(rivals, key=lambda r: r["accuracy_after"], default=None)


def goals(rows: Sequence[dict[str, Any]], cfg: dict[str, Any]) -> dict[str, Any]:
    """The goals (a) to (e), evaluated from the rows (a goal not measured is left out, or has
    ``passed: None``)."""
    out: dict[str, Any] = {"a_sensitivity_best_before": {}, "b_finetuned_vs_dense": {},
                           "c_latency_ratio": {}, "d_within_dense_after_finetune": {},
                           "e_default_vs_best_baseline": {}}
    by = {(r["model"], r["mode"], r["budget"]): r for r in rows}
    models = list(dict.fromkeys(r["model"] for r in rows))
    default = cfg["default_mode"]
    for model in models:
        a, e = {}, {}
        for budget in dict.fromkeys(r["budget"] for r in rows if r["model"] == model):
            sens = by.get((model, "sensitivity", budget))
            base = [by[k]["accuracy_before"] for k in by
                    if k[0] == model and k[2] == budget and k[1] in BASELINES]
            if sens is not None and base:
                a[str(budget)] = {"sensitivity": sens["accuracy_before"],
                                  "best_other": max(base),
                                  "passed": sens["accuracy_before"] >= max(base)}
            cell = by.get((model, default, budget))
            if cell is None or cell["accuracy_after"] is None:
                continue
            best = _best_outside(rows, cell, cfg)
            if best is not None:
                e[str(budget)] = {"default": cell["accuracy_after"],
                                  "best_baseline": best["accuracy_after"],
                                  "baseline": best["mode"],
                                  "passed": cell["accuracy_after"] >= best["accuracy_after"]}
        if a:
            out["a_sensitivity_best_before"][model] = {
                "budgets": a, "passed": all(v["passed"] for v in a.values())}
        if e:
            out["e_default_vs_best_baseline"][model] = {
                "mode": default, "budgets": e, "passed": all(v["passed"] for v in e.values())}
        cell = by.get((model, "sensitivity", cfg["goal_budget"]))
        if cell is not None and cell["accuracy_after"] is not None:
            gap = cell["accuracy_dense"] - cell["accuracy_after"]
            out["b_finetuned_vs_dense"][model] = {
                "dense": cell["accuracy_dense"], "after": cell["accuracy_after"], "gap": gap,
                "passed": gap <= cfg["goal_points"] + _TOL}
        if cell is not None and cell.get("latency_ratio") is not None:
            out["c_latency_ratio"][model] = {
                "ratio": cell["latency_ratio"], "passed": cell["latency_ratio"] <= cfg[
                    "goal_latency"]}
    for spec in cfg["finetune_goals"]:
        if spec["model"] not in models:
            continue
        key = f"{spec['model']}@{spec['budget']}"
        cell = by.get((spec["model"], default, spec["budget"]))
        if cell is None or cell["accuracy_after"] is None:
            out["d_within_dense_after_finetune"][key] = {
                "passed": None, "why": f"no fine-tuned {default} row at {spec['budget']}"}
            continue
        gap, epochs = cell["accuracy_dense"] - cell["accuracy_after"], _epochs(cell, cfg)
        d: dict[str, Any] = {
            "mode": default, "dense": cell["accuracy_dense"], "after": cell["accuracy_after"],
            "gap": gap, "epochs": epochs, "max_epochs": spec["max_epochs"],
            "distill": cell.get("distill"), "within_dense": gap <= cfg["goal_points"] + _TOL,
            "epochs_ok": epochs <= spec["max_epochs"]}
        if spec.get("ahead_of"):
            rival = _best_outside(rows, cell, cfg, spec["ahead_of"])
            d.update(ahead_of=spec["ahead_of"],
                     rival=None if rival is None else rival["mode"],
                     rival_after=None if rival is None else rival["accuracy_after"],
                     ahead=None if rival is None else (cell["accuracy_after"]
                                                       > rival["accuracy_after"]))
        d["passed"] = _all(d["within_dense"], d["epochs_ok"], d.get("ahead", True))
        out["d_within_dense_after_finetune"][key] = d
    return out


def _status(passed: bool | None) -> str:
    return "n/a " if passed is None else ("PASS" if passed else "FAIL")


def verdicts(g: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    """One line per evaluated goal of :func:`goals`: PASS, FAIL or n/a (not measured)."""
    pt = cfg["goal_points"] * 100
    lines = []
    for model, v in g["a_sensitivity_best_before"].items():
        each = ", ".join(f"{b}: {x['sensitivity']:.4f} vs {x['best_other']:.4f}"
                         for b, x in v["budgets"].items())
        lines.append(f"{_status(v['passed'])} (a) {model}: sensitivity >= best of "
                     f"{'/'.join(BASELINES)} before fine-tuning ({each})")
    for model, v in g["b_finetuned_vs_dense"].items():
        lines.append(f"{_status(v['passed'])} (b) {model} at {cfg['goal_budget']}: "
                     f"{v['after']:.4f} after fine-tuning, {v['gap'] * 100:.2f} pt under dense "
                     f"{v['dense']:.4f} (goal <= {pt:g} pt)")
    for model, v in g["c_latency_ratio"].items():
        lines.append(f"{_status(v['passed'])} (c) {model} at {cfg['goal_budget']}: latency "
                     f"ratio {v['ratio']:.3f} (goal <= {cfg['goal_latency']})")
    for key, v in g["d_within_dense_after_finetune"].items():
        if v["passed"] is None and "why" in v:
            lines.append(f"n/a  (d) {key}: {v['why']}")
            continue
        text = (f"{_status(v['passed'])} (d) {key}: {v['mode']} {v['after']:.4f} after "
                f"{v['epochs']} epoch(s) (goal <= {v['max_epochs']}"
                f"{', distilled' if v['distill'] is not None else ''}), "
                f"{v['gap'] * 100:.2f} pt under dense {v['dense']:.4f} (goal <= {pt:g} pt)")
        if "ahead_of" in v:
            text += (f"; {v['ahead_of']}: not measured" if v["rival"] is None else
                     f"; best {v['ahead_of']} {v['rival']} {v['rival_after']:.4f} "
                     f"({'ahead of' if v['ahead'] else 'not ahead of'} it)")
        lines.append(text)
    for model, v in g["e_default_vs_best_baseline"].items():
        each = ", ".join(f"{b}: {x['default']:.4f} vs {x['baseline']} {x['best_baseline']:.4f}"
                         for b, x in v["budgets"].items())
        lines.append(f"{_status(v['passed'])} (e) {model}: {v['mode']} >= best baseline after "
                     f"fine-tuning ({each})")
    return lines


def plot(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Accuracy against achieved params fraction: a panel per model, a line per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [r for r in rows if r["model"] == model]
        for k, mode in enumerate(dict.fromkeys(r["mode"] for r in mine)):
            pts = sorted((r["params_fraction"], r["accuracy_before"], r["accuracy_after"])
                         for r in mine if r["mode"] == mode)
            color = f"C{k}"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color, label=mode)
            after = [p for p in pts if p[2] is not None]
            if after:
                ax.plot([p[0] for p in after], [p[2] for p in after], "s--", color=color)
        ax.axhline(mine[0]["accuracy_dense"], color="k", lw=0.8, ls=":", label="dense")
        ax.set(title=f"{model}: solid before, dashed after fine-tuning",
               xlabel="conv params fraction (achieved)", ylabel="held-out accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=None, help="default: cnn4 resnet20")
    ap.add_argument("--budgets", nargs="+", type=float, default=None, help="params fractions")
    ap.add_argument("--modes", nargs="+", default=None, help="allocation modes")
    ap.add_argument("--quick", action="store_true", help="tiny configuration (smoke test)")
    ap.add_argument("--no-finetune", action="store_true", help="skip the fine-tuning")
    ap.add_argument("--no-tltorch", action="store_true", help="skip tensorly-torch's Tucker")
    ap.add_argument("--no-pruning", action="store_true", help="skip Torch-Pruning's rows")
    ap.add_argument("--pruning", nargs="+", default=None, choices=PRUNING_IMPORTANCES,
                    help="Torch-Pruning importances (default: l1 taylor)")
    ap.add_argument("--epochs", type=int, default=None,
                    help=f"fine-tuning epochs of every row (default "
                         f"{CONFIG['finetune_epochs']})")
    ap.add_argument("--distill", nargs="?", type=float, const=1.0, default=None,
                    metavar="WEIGHT", help="fine-tune every row with the dense model as "
                    "teacher; WEIGHT of its KL term in [0, 1] (default 1.0)")
    ap.add_argument("--temperature", type=float, default=None,
                    help="distillation temperature (with --distill; default 4.0)")
    ap.add_argument("--finetune-images", type=int, default=None, help="0: the whole split")
    ap.add_argument("--finetune-lr", type=float, default=None, help="fit's peak lr (default 0.01)")
    ap.add_argument("--finetune-no-augment", action="store_true", help="fit(augment=False)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--progress", action="store_true", help="tqdm bars of compress")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (PNG next to it)")
    return ap.parse_args(argv)


def _config(args: argparse.Namespace) -> dict[str, Any]:
    cfg = {**CONFIG, **(QUICK if args.quick else {})}
    for key in ("models", "budgets", "modes"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.finetune_images is not None:
        cfg["finetune_images"] = args.finetune_images or None
    cfg["finetune"] = {**cfg["finetune"], **({} if args.finetune_lr is None else {
        "lr": args.finetune_lr}), **({"augment": False} if args.finetune_no_augment else {})}
    if args.no_tltorch:
        cfg["tltorch"] = False
    if args.pruning is not None:
        cfg["pruning"] = list(args.pruning)
    if args.no_pruning:
        cfg["pruning"] = []
    if args.epochs is not None:
        if args.epochs < 1:
            raise SystemExit(f"--epochs must be >= 1, got {args.epochs} (no fine-tuning: "
                             f"--no-finetune)")
        cfg["finetune_epochs"] = args.epochs
    if args.temperature is not None and args.distill is None:
        raise SystemExit("--temperature needs --distill")
    if args.distill is not None:
        if args.no_finetune:
            raise SystemExit("--distill needs fine-tuning (drop --no-finetune)")
        from tnconv.distillation import check_distillation

        try:
            cfg["distill"], cfg["temperature"] = check_distillation(args.distill,
                                                                    args.temperature)
        except ValueError as exc:
            raise SystemExit(f"--distill / --temperature: {exc}") from None
    from tnconv.compression import ALLOCATIONS

    valid = [*ALLOCATIONS, "sensitivity-weights"]
    bad = [m for m in cfg["modes"] if m not in valid]
    if bad:
        raise SystemExit(f"unknown mode(s) {bad}; valid: {', '.join(valid)}")
    return cfg


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from tnconv.data import load_dataset

    cfg = _config(args)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda asked for, but CUDA is not available")
    test, train = load_dataset(cfg["dataset"], "test"), load_dataset(cfg["dataset"], "train")
    data = split_data(test, train, cfg)
    tag = ("quick" if args.quick else "-".join(cfg["models"])) + (
        f"_e{cfg['finetune_epochs']}" if cfg["finetune_epochs"] != CONFIG["finetune_epochs"]
        else "") + ("_distill" if cfg["distill"] is not None else "")
    stem = f"bench_compress_{device.type}_{tag}"
    out = args.out or RESULTS / f"{stem}.json"
    env = environment(device, packages=("tensorly", "tltorch", "torch_pruning"))
    result: dict[str, Any] = {
        "benchmark": "tnconv.compress: accuracy against params budget per allocation mode, "
                     "before and after fine-tuning; tensorly-torch uniform Tucker and "
                     "Torch-Pruning structured channel pruning baselines, fine-tuned alike",
        "command": command_line(__file__, argv),
        "config": {**cfg, "finetune_images": len(data[2]), "finetune": {
            **cfg["finetune"], "note": "over compress's FINETUNE_DEFAULTS"}},
        "finetune": not args.no_finetune, "dense_accuracy": {}, "rows": [], "notes": [],
    }
    print(f"device {env['device_name']}, torch {torch.__version__}, {env['threads']} "
          f"threads; sens {len(data[0])}, held-out {len(data[1])}, fine-tune {len(data[2])} "
          f"images", flush=True)
    if not args.no_finetune:
        print(f"fine-tuning: {cfg['finetune_epochs']} epoch(s) per row" + (
            "" if cfg["distill"] is None else f", distilled from the dense model (weight "
            f"{cfg['distill']}, temperature {cfg['temperature']})"), flush=True)
    print(_HEAD, flush=True)
    done: list[dict[str, Any]] = []

    def save(rows: list[dict[str, Any]], notes: list[str]) -> None:
        result["rows"] = done + rows
        result["notes"] = sorted(set(result["notes"]) | set(notes))
        result["goals"] = goals(result["rows"], cfg)
        result["elapsed_s"] = time.perf_counter() - t_start
        write_result(stem, result, out, env=env)

    t_start = time.perf_counter()
    for name in cfg["models"]:
        model, _ = tnconv.train_or_load(name, cfg["dataset"], device=device, progress=False)
        dense, rows, notes = run_model(model, name, data, cfg, device, finetune=not
                                       args.no_finetune, progress=args.progress, on_row=save)
        result["dense_accuracy"][name] = dense
        save(rows, notes)
        done += rows
    plot(result["rows"], out.with_suffix(".png"))
    print(_HEAD)
    for r in result["rows"]:
        print(_row_line(r))
    print(json.dumps(result["goals"], indent=1))
    for line in verdicts(result["goals"], cfg):
        print(line)
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"wrote {out} and {out.with_suffix('.png')} in {result['elapsed_s']:.0f} s")
    return result


if __name__ == "__main__":
    main()
