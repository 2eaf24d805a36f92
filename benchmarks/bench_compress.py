"""Accuracy against budget of ``tnconv.compress`` per allocation mode, before/after fine-tuning.

For each model (cnn4, resnet20, trained on Fashion-MNIST by ``train_or_load``), each budget
(``params=0.5, 0.25, 0.1`` of the conv parameters) and each allocation mode (``uniform``,
``energy``, ``vbmf``, ``sensitivity``, and ``sensitivity-weights``: the sensitivity mode with
``fit="weights"``, i.e. without the data-fitted factors), in the same run:

* ``tnconv.compress(model, sens, params=budget, allocate=mode)``: sensitivity data ``sens`` =
  a fixed 1000-image subset of the test split; the latency of the dense and the compressed
  model (batch 256) comes from the report;
* the accuracy on a *disjoint* held-out part of the test split (5000 other images), of the
  dense model, the compressed one, and the compressed one after one epoch of fine-tuning with
  ``tnconv.fit`` (what ``compress(..., epochs=1, train_data=...)`` runs, with the same
  defaults) on a fixed subset of the training split (its size is in the JSON);
* with tensorly-torch installed, its uniform Tucker (``tltorch.FactorizedConv.from_conv``,
  ``factorization="tucker"``, ``implementation="factorized"``, ``fixed_rank_modes="spatial"``,
  each layer's rank fraction the largest that keeps the layer within the budget) as an outside
  reference, fine-tuned alike.

The issue's goals are evaluated from the rows: (a) sensitivity >= the best of uniform, energy
and vbmf at every budget before fine-tuning; (b) after one epoch at 25 %, within 1 point of
dense (cnn4; the resnet20 figure is reported); (c) latency ratio at 25 % <= 0.8.

Run::

    python benchmarks/bench_compress.py --models cnn4    # results/bench_compress_cpu_cnn4.json
    python benchmarks/bench_compress.py --models resnet20 --threads 1
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
    "finetune_epochs": 1,
    "finetune": {},                   # extra tnconv.fit options (none: compress's defaults)
    "tltorch": True,                  # add tensorly-torch's uniform Tucker where installed
    "cache": True,                    # compress(cache=): the sensitivity sweep is cached
    "seed": SPLIT["seed"],            # of the test-split permutation and the training subset
    "goal_budget": 0.25,
    "goal_points": 0.01,              # (b): within 1 point of dense
    "goal_latency": 0.8,              # (c): latency ratio at the goal budget
}
QUICK: dict[str, Any] = {
    "models": ["cnn4"], "budgets": [0.25], "modes": ["uniform", "sensitivity"],
    "sens_images": 200, "heldout_images": 500, "finetune_images": 512, "tltorch": False,
}
BASELINES = ("uniform", "energy", "vbmf")
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
                       device: torch.device, finetune: bool) -> dict[str, Any]:
    from tnconv.compression.api import FINETUNE_DEFAULTS
    from tnconv.train import evaluate, fit

    t0 = time.perf_counter()
    row: dict[str, Any] = {"accuracy_before": evaluate(small, held, device=device)["accuracy"]}
    row["eval_s"] = time.perf_counter() - t0
    row["accuracy_after"] = row["finetune_s"] = None
    if finetune:
        t0 = time.perf_counter()
        fit(small, tune, epochs=cfg["finetune_epochs"], device=device, progress=False,
            **{**FINETUNE_DEFAULTS, **cfg["finetune"]})
        row["finetune_s"] = time.perf_counter() - t0
        row["accuracy_after"] = evaluate(small, held, device=device)["accuracy"]
    return row


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
    row.update(_finetune_and_eval(small, held, tune, cfg, device, finetune))
    row["seconds"] = time.perf_counter() - t0
    return row


def run_tltorch_cell(model: nn.Module, budget: float, data: tuple[Any, Any, Any],
                     cfg: dict[str, Any], device: torch.device, *, finetune: bool = True,
                     input_size: Sequence[int] | None = None) -> dict[str, Any]:
    """The tensorly-torch uniform Tucker reference at ``budget``, measured as :func:`run_cell`."""
    from tnconv.compression import measure_latencies

    t0 = time.perf_counter()
    small, failed = tltorch_tucker(model, budget)
    small = small.to(device)
    row: dict[str, Any] = {
        "mode": "tltorch-tucker", "budget": budget, "compress_s": time.perf_counter() - t0,
        "params_fraction": conv_params(small) / conv_params(model), "flops_fraction": None,
        "layers_left_dense": failed,
    }
    if input_size is not None:
        dense_s, small_s = measure_latencies([model, small], input_size, device=device)
        row.update(latency_dense_s=dense_s, latency_compressed_s=small_s,
                   latency_ratio=small_s / dense_s, latency_batch=256)
    row.update(_finetune_and_eval(small, data[1], data[2], cfg, device, finetune))
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
    size = tuple(int(d) for d in data[0].images.shape[1:])
    rows = []
    for budget in cfg["budgets"]:
        for mode in list(cfg["modes"]) + ([] if skip else ["tltorch-tucker"]):
            if mode == "tltorch-tucker":
                try:
                    row = run_tltorch_cell(model, budget, data, cfg, device,
                                           finetune=finetune, input_size=size)
                except Exception as exc:  # noqa: BLE001 - an outside reference: note, go on
                    notes.append(f"tltorch at {budget}: {type(exc).__name__}: {exc}"[:300])
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
         f"{'before':>6} {'after':>6} {'lat.r':>6} {'sec':>6}")


def _row_line(r: dict[str, Any]) -> str:
    return (f"{r['model']:<9} {r['mode']:<19} {r['budget']:>6.2f} {r['params_fraction']:>7.4f} "
            f"{_f(r['flops_fraction'], '6.3f'):>6} {r['accuracy_dense']:>6.4f} "
            f"{r['accuracy_before']:>6.4f} {_f(r['accuracy_after'], '6.4f'):>6} "
            f"{_f(r.get('latency_ratio'), '6.3f'):>6} {r['seconds']:>6.1f}")


def goals(rows: Sequence[dict[str, Any]], cfg: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals (a), (b), (c), evaluated from the rows (``None``: not measured)."""
    out: dict[str, Any] = {"a_sensitivity_best_before": {}, "b_finetuned_vs_dense": {},
                           "c_latency_ratio": {}}
    by = {(r["model"], r["mode"], r["budget"]): r for r in rows}
    for model in dict.fromkeys(r["model"] for r in rows):
        a = {}
        for budget in dict.fromkeys(r["budget"] for r in rows if r["model"] == model):
            sens = by.get((model, "sensitivity", budget))
            base = [by[k]["accuracy_before"] for k in by
                    if k[0] == model and k[2] == budget and k[1] in BASELINES]
            if sens is None or not base:
                continue
            a[str(budget)] = {"sensitivity": sens["accuracy_before"], "best_other": max(base),
                              "passed": sens["accuracy_before"] >= max(base)}
        if a:
            out["a_sensitivity_best_before"][model] = {
                "budgets": a, "passed": all(v["passed"] for v in a.values())}
        cell = by.get((model, "sensitivity", cfg["goal_budget"]))
        if cell is not None and cell["accuracy_after"] is not None:
            gap = cell["accuracy_dense"] - cell["accuracy_after"]
            out["b_finetuned_vs_dense"][model] = {
                "dense": cell["accuracy_dense"], "after": cell["accuracy_after"], "gap": gap,
                "passed": gap <= cfg["goal_points"]}
        if cell is not None and cell.get("latency_ratio") is not None:
            out["c_latency_ratio"][model] = {
                "ratio": cell["latency_ratio"], "passed": cell["latency_ratio"] <= cfg[
                    "goal_latency"]}
    return out


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
    ap.add_argument("--no-finetune", action="store_true", help="skip the fine-tuning epoch")
    ap.add_argument("--no-tltorch", action="store_true", help="skip tensorly-torch's Tucker")
    ap.add_argument("--finetune-images", type=int, default=None, help="0: the whole split")
    ap.add_argument("--finetune-lr", type=float, default=None, help="fit's peak lr (def. 0.1)")
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
    tag = "quick" if args.quick else "-".join(cfg["models"])
    stem = f"bench_compress_{device.type}_{tag}"
    out = args.out or RESULTS / f"{stem}.json"
    env = environment(device, packages=("tensorly", "tltorch"))
    result: dict[str, Any] = {
        "benchmark": "tnconv.compress: accuracy against params budget per allocation mode, "
                     "before and after fine-tuning; tensorly-torch uniform Tucker reference",
        "command": command_line(__file__, argv),
        "config": {**cfg, "finetune_images": len(data[2]), "finetune": {
            **cfg["finetune"], "note": "over compress's FINETUNE_DEFAULTS"}},
        "finetune": not args.no_finetune, "dense_accuracy": {}, "rows": [], "notes": [],
    }
    print(f"device {env['device_name']}, torch {torch.__version__}, {env['threads']} "
          f"threads; sens {len(data[0])}, held-out {len(data[1])}, fine-tune {len(data[2])} "
          f"images", flush=True)
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
    print(f"wrote {out} and {out.with_suffix('.png')} in {result['elapsed_s']:.0f} s")
    return result


if __name__ == "__main__":
    main()
