"""Where ``rank_multiple`` pays: inference forms at rank multiple 1 vs 8, same params budget.

For each model (cnn4 and resnet20 of the Fashion-MNIST checkpoints when cached, else a fixed
random init; 1 x 28 x 28 images), ``tnconv.compress`` at one params budget (data-free
allocation, so no data is needed) with ``rank_multiple=1`` and with ``rank_multiple=8``; the
inference forms (``tnconv.for_inference``) of both, on the factored path everywhere
(``path="factored"``: the ranks are the channel counts of the factors' convolutions) and on
the measured-faster path per layer (``path="measured"``: what is deployed), are timed with the
dense inference form in the same interleaved rounds, on the CPU with ``--threads`` threads, at
each batch size. The JSON holds every median, the ratios multiple-8 / multiple-1 and each /
dense, and the ranks chosen. Run::

    python benchmarks/bench_rank_multiple.py                       # the full measurement
    python benchmarks/bench_rank_multiple.py --models cnn4 --batches 8 --rounds 5   # quick
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from _common import checkpoint_or_init, command_line, environment, interleaved, write_result

# ---------------------------------------------------------------------- config
CONFIG: dict[str, Any] = {
    "models": ["cnn4", "resnet20"],
    "dataset": "fashion-mnist",       # of the cached checkpoints
    "input_size": (1, 28, 28),        # C, H, W
    "params": 0.25,                   # conv params kept, both multiples
    "multiples": (1, 8),              # the baseline first
    "allocate": "energy",             # data-free
    "paths": ("factored", "measured"),
    "batches": (1, 64),
    "rounds": 30,                     # timed interleaved rounds per batch
    "warmup": 3,                      # untimed rounds first
    "min_total_s": 1.0,               # more rounds while a call has run less than this (s)
    "threads": 2,
}
NAME = "bench_rank_multiple_cpu"  # results/<NAME>.json


def _init(name: str) -> Any:
    import tnconv

    return {"cnn4": lambda: tnconv.cnn4(10, 1), "resnet20": lambda: tnconv.resnet20(10, 1)}[name]


def _compressed(name: str, cfg: dict[str, Any]) -> tuple[Any, dict[int, Any], dict[str, Any]]:
    """The model, its compressed copies per rank multiple and what was chosen."""
    import tnconv

    model, source = checkpoint_or_init(name, cfg["dataset"], _init(name))
    smalls, chosen = {}, {"source": source}
    for m in cfg["multiples"]:
        smalls[m], rep = tnconv.compress(model, params=cfg["params"], allocate=cfg["allocate"],
                                         rank_multiple=m, input_size=cfg["input_size"],
                                         latency=False, progress=False)
        chosen[f"x{m}"] = {"params_fraction": rep.params_fraction,
                           "flops_fraction": rep.flops_fraction,
                           "ranks": {r.name: [r.method, list(r.ranks)] for r in rep.layers}}
    return model, smalls, chosen


def _measure(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    import torch

    import tnconv

    model, smalls, chosen = _compressed(name, cfg)
    out: dict[str, Any] = {"chosen": chosen, "batches": {}}
    base, top = (f"x{m}" for m in cfg["multiples"][:2])
    for batch in cfg["batches"]:
        x = torch.zeros(batch, *cfg["input_size"])
        forms = {"dense": tnconv.for_inference(model, x)}
        paths: dict[str, Any] = {}
        for m, small in smalls.items():
            for path in cfg["paths"]:
                forms[f"x{m} {path}"] = tnconv.for_inference(small, x, path=path)
                paths[f"x{m} {path}"] = forms[f"x{m} {path}"].inference_report.paths
        with torch.inference_mode():
            timed = interleaved({k: (lambda f=f, x=x: f(x)) for k, f in forms.items()},
                                cfg["rounds"], warmup=cfg["warmup"],
                                min_total_s=cfg["min_total_s"], max_rounds=10 * cfg["rounds"])
        med = {k: t.median for k, t in timed.items()}
        row = {"median_ms": {k: 1e3 * v for k, v in med.items()},
               "timing": {k: t.summary() for k, t in timed.items()},
               "vs_dense": {k: v / med["dense"] for k, v in med.items() if k != "dense"},
               f"{top}_over_{base}": {p: med[f"{top} {p}"] / med[f"{base} {p}"]
                                      for p in cfg["paths"]},
               "paths": paths}
        out["batches"][str(batch)] = row
        print(f"{name} batch {batch}: " + ", ".join(
            f"{k} {v:.2f} ms" for k, v in row["median_ms"].items()) + " | "
            + ", ".join(f"{top}/{base} {p} {r:.3f}" for p, r in row[f"{top}_over_{base}"].items()))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="default: cnn4 resnet20")
    parser.add_argument("--params", type=float, default=None, help="default: 0.25")
    parser.add_argument("--multiple", type=int, default=None, help="compared with 1 (default 8)")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default: 1 64")
    parser.add_argument("--rounds", type=int, default=None, help="default: 30")
    parser.add_argument("--threads", type=int, default=None, help="default: 2")
    parser.add_argument("--out", default=None, help=f"JSON path (default results/{NAME}.json)")
    args = parser.parse_args(argv)
    cfg = dict(CONFIG)
    for key in ("models", "params", "batches", "rounds", "threads"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.multiple is not None:
        cfg["multiples"] = (1, args.multiple)
    import torch

    torch.set_num_threads(cfg["threads"])
    env = environment("cpu")
    result = {"config": cfg, "command": command_line(__file__, argv),
              "models": {m: _measure(m, cfg) for m in cfg["models"]}}
    print(json.dumps({m: {b: r[next(k for k in r if "_over_" in k)]
                          for b, r in v["batches"].items()}
                      for m, v in result["models"].items()}, indent=1))
    print(f"wrote {write_result(NAME, result, args.out, env=env)}")
    return result


if __name__ == "__main__":
    main()
