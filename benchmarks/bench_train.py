"""Train a tnconv model with its default config, time it, evaluate it, and log JSON.

Targets (issue 3):

* cnn4 on Fashion-MNIST, CPU only: >= 91 % test accuracy in <= 10 minutes on a 2-core machine::

      python benchmarks/bench_train.py --model cnn4 --dataset fashion-mnist --device cpu --save

* resnet50 on Fashion-MNIST, one H100: >= 94 % test accuracy in <= 5 minutes::

      python benchmarks/bench_train.py --model resnet50 --dataset fashion-mnist --device cuda

The training options come from ``tnconv.train.TRAIN_DEFAULTS`` (printed before the run);
command-line options override single entries. The timed region is ``fit`` alone (data loading
and the final evaluation are timed separately); on CUDA the clock is read after a
``torch.cuda.synchronize()``. Results go to ``benchmarks/results/<model>-<dataset>-<device>.json``
with the command, device, torch version, thread count, times and accuracy. ``--save`` also stores
the trained model as the default checkpoint (``tnconv.checkpoints.default_checkpoint_path``) so that
examples reuse it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from _common import command_line, environment, sync, write_result

from tnconv.checkpoints import default_checkpoint_path, save_checkpoint
from tnconv.data import load_dataset
from tnconv.models import get_model
from tnconv.runtime import resolve_device
from tnconv.train import evaluate, fit, train_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="cnn4")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--save", action="store_true", help="store the default checkpoint")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default results/)")
    args = parser.parse_args(argv)

    if str(args.device).startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda asked for, but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    config = train_config(args.model, args.dataset, device)
    for key in ("epochs", "batch_size", "lr"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    command = command_line(__file__, argv)
    print(f"command: {command}")
    print(f"device: {device}  torch {torch.__version__}  threads {torch.get_num_threads()}")
    print("config: " + ", ".join(f"{k}={v}" for k, v in config.items()))

    env = environment(device)  # its load averages: other jobs sharing the CPU slow the run
    t0 = time.perf_counter()
    train = load_dataset(args.dataset, "train").to(device)
    test = load_dataset(args.dataset, "test").to(device)
    sync(device)
    load_s = time.perf_counter() - t0

    torch.manual_seed(args.seed)
    model = get_model(args.model, train.num_classes, train.in_channels).to(device)
    sync(device)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    history = fit(model, train, device=device, seed=args.seed,
                  progress=not args.no_progress, **config)
    sync(device)
    train_s = time.perf_counter() - t0
    train_cpu_s = time.process_time() - cpu0
    t0 = time.perf_counter()
    result = evaluate(model, test)
    eval_s = time.perf_counter() - t0

    record = {
        "command": command,
        "model": args.model,
        "dataset": args.dataset,
        "config": config,
        "seed": args.seed,
        "load_seconds": round(load_s, 2),
        "train_seconds": round(train_s, 2),
        # CPU time of this process during fit: on a shared CPU, cpu seconds / threads estimates
        # the wall time the run would take alone
        "train_cpu_seconds": round(train_cpu_s, 2),
        "eval_seconds": round(eval_s, 2),
        "test_accuracy": result["accuracy"],
        "test_loss": result["loss"],
        "history": history,
    }
    if "top5" in result:
        record["test_top5"] = result["top5"]
    out = write_result(f"{args.model}-{args.dataset}-{device.type}", record, args.out, env=env)

    header = f"{'model':<10}{'dataset':<15}{'device':<8}{'train s':>9}{'total s':>9}"
    print(f"\n{header}{'test acc':>10}")
    total = load_s + train_s + eval_s
    print(f"{args.model:<10}{args.dataset:<15}{device.type:<8}{train_s:>9.1f}{total:>9.1f}"
          f"{result['accuracy']:>10.4f}")
    print(f"wrote {out}")
    if args.save:
        meta = {
            "model": args.model, "dataset": train.name, "num_classes": train.num_classes,
            "in_channels": train.in_channels, "accuracy": result["accuracy"],
            "test_loss": result["loss"], "epochs": config["epochs"], "train_config": config,
            "seed": args.seed, "device": str(device), "train_seconds": train_s,
            "history": history,
        }
        path = save_checkpoint(model, default_checkpoint_path(args.model, train.name), meta=meta)
        print(f"saved checkpoint {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
