"""The ``tnconv`` command line (also ``python -m tnconv``): train, eval, spectra, sweep, study,
compress, export.

Each subcommand is registered by ``_add_<name>(subparsers)`` and run by ``_cmd_<name>(args)``,
which returns the exit status; add a subcommand by writing both (here, or in a module of its own
such as :mod:`tnconv.cli.compress_command`, with the helpers of
:mod:`tnconv.cli.options`) and listing the
``add`` function in :data:`_SUBCOMMANDS`. The choices of models, datasets, optimizers,
schedules, sweep modes and study profiles come from the package's registries
(:data:`tnconv.models.MODELS`, :data:`tnconv.data.DATASETS`, :data:`tnconv.train.OPTIMIZERS`,
...), never from literals here. Errors raised by tnconv (ValueError, TypeError) and by the file
system (OSError, e.g. FileNotFoundError), and a missing optional package (ImportError, with
the ``pip install`` that brings it) are printed as one line ``tnconv: error: ...`` and give
exit status 2.

The study's subcommand and :func:`~tnconv.cli.study_main` (the command line of the example
scripts) are in :mod:`tnconv.cli.study_command`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ..data import DATASETS
from ..models import MODELS
from .compress_command import add_compress
from .export_command import add_export
from .options import Parser, add_common_options, split_list, subcommand
from .study_command import add_study

__all__ = ["build_parser", "main"]


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    from ..train import OPTIMIZERS, SCHEDULES

    p = subcommand(
        subparsers, _cmd_train, "train a model and save a checkpoint",
        epilog="example: tnconv train --model cnn4 --dataset fashion-mnist --epochs 4 "
               "--device cpu --out cnn4-fmnist.pt")
    p.add_argument("--model", required=True, choices=list(MODELS), help="model to train")
    p.add_argument("--dataset", required=True, choices=list(DATASETS), help="dataset")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: per model)")
    p.add_argument("--out", type=Path, default=None, metavar="PATH",
                   help="checkpoint path (default: ~/.cache/tnconv/checkpoints/"
                        "<model>-<dataset>.pt, or under $TNCONV_CACHE)")
    p.add_argument("--batch-size", type=int, default=None, help="images per step")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--optimizer", choices=list(OPTIMIZERS), default=None)
    p.add_argument("--schedule", choices=list(SCHEDULES), default=None)
    p.add_argument("--subset", type=int, default=None, metavar="N",
                   help="train on N images only (a fixed random subset)")
    p.add_argument("--eval-subset", type=int, default=None, metavar="N",
                   help="evaluate on N test images only")
    add_common_options(p)


def _cmd_train(args: argparse.Namespace) -> int:
    """Train a model on a dataset with the defaults of tnconv.train.TRAIN_DEFAULTS (options
    below override them), evaluate it on the test split and save a checkpoint
    (tnconv.train_or_load)."""
    from ..checkpoints import default_checkpoint_path
    from ..pretrained import train_or_load

    options = {key: getattr(args, key) for key in ("batch_size", "lr", "optimizer", "schedule")
               if getattr(args, key) is not None}
    out = args.out if args.out is not None else default_checkpoint_path(args.model, args.dataset)
    _, meta = train_or_load(
        args.model, args.dataset, epochs=args.epochs, device=args.device, path=out, force=True,
        train_subset=args.subset, test_subset=args.eval_subset, seed=args.seed,
        progress=not args.no_progress, root=args.data_root, download=args.download, **options,
    )
    print(f"trained {meta['model']} on {meta['dataset']} ({meta['train_images']} images) on "
          f"{meta['device']}: " + ", ".join(f"{k}={v}" for k, v in meta["train_config"].items()))
    print(f"test accuracy {meta['accuracy']:.4f} (loss {meta['test_loss']:.4f}, "
          f"{meta['test_images']} images); saved {out}")
    return 0


def _add_eval(subparsers: argparse._SubParsersAction) -> None:
    from ..data import SPLITS
    from .arguments import add_input_options

    p = subcommand(
        subparsers, _cmd_eval, "evaluate a checkpoint or any model on a dataset's test split",
        epilog="examples: tnconv eval ~/.cache/tnconv/checkpoints/cnn4-fashion-mnist.pt; "
               "tnconv eval resnet18 --weights DEFAULT --dataset imagenet/val")
    p.add_argument("checkpoint", type=Path, metavar="MODEL",
                   help="a checkpoint file, a model name (with --weights or --state-dict) or "
                        "package.module:callable (with --state-dict FILE)")
    p.add_argument("--dataset", default=None, metavar="DATA",
                   help="a dataset name, an ImageFolder folder or package.module:callable "
                        "(default: the checkpoint's dataset)")
    p.add_argument("--split", default="test", choices=list(SPLITS))
    p.add_argument("--subset", type=int, default=None, metavar="N",
                   help="evaluate on N images only")
    p.add_argument("--batch-size", type=int, default=1000)
    add_input_options(p)
    add_common_options(p)


def _cmd_eval(args: argparse.Namespace) -> int:
    """Load a checkpoint written by 'tnconv train' and report its test accuracy and loss
    (and top-5 accuracy for CIFAR-100)."""
    from ..runtime import resolve_device
    from ..train import evaluate
    from .arguments import describe_data, load_input_data, load_input_model

    device = resolve_device(args.device)
    model, meta = load_input_model(args, str(args.checkpoint), device)
    data = load_input_data(args, args.dataset, meta, split=args.split, subset=args.subset)
    result = evaluate(model, data, batch_size=args.batch_size, device=device)
    line = (f"{meta['model']} on {describe_data(data, args.dataset)} ({args.split}, "
            f"{result['n']} images): "
            f"accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f}")
    if "top5" in result:
        line += f", top-5 {result['top5']:.4f}"
    print(f"{line}; {sum(p.numel() for p in model.parameters())} parameters")
    return 0


def _add_spectra(subparsers: argparse._SubParsersAction) -> None:
    p = subcommand(
        subparsers, _cmd_spectra,
        "spectra atlas of a model's conv kernels over cuts (entropy, ranks, norm loss)",
        epilog="examples: tnconv spectra ~/.cache/tnconv/checkpoints/cnn4-fashion-mnist.pt; "
               "tnconv spectra resnet50 --cuts 'out|in,kh,kw;out,kh|in,kw' --out atlas.csv")
    p.add_argument("source", help="a checkpoint written by 'tnconv train', a model name (cnn4, "
                                  "resnet50 or any torchvision classifier; random init unless "
                                  "--weights or --state-dict) or package.module:callable")
    p.add_argument("--cuts", default="all",
                   help="'all' (every bipartition, default) or cuts separated by ';'")
    p.add_argument("--num-classes", type=int, default=10,
                   help="classes of a model built by name (default: 10)")
    p.add_argument("--in-channels", type=int, default=3,
                   help="input channels of a model built by name (default: 3)")
    p.add_argument("--weights", default=None, metavar="NAME",
                   help="torchvision weights of a model name, e.g. DEFAULT")
    p.add_argument("--state-dict", type=Path, default=None, metavar="FILE",
                   help="load these weights into a model built by name or MODULE:CALLABLE")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of a randomly initialised model (default: 0)")
    p.add_argument("--include-linear", action="store_true", help="also the Linear layers")
    p.add_argument("--out", type=Path, default=None, metavar="PATH",
                   help="write the table as CSV (default: print it)")


def _cmd_spectra(args: argparse.Namespace) -> int:
    """Cut every convolution kernel of a model along a set of cuts and report, per (layer,
    cut): full rank, entanglement entropy, rank needed for 1%, 10% and 50% relative error,
    and norm loss at half rank (tnconv.spectra_atlas)."""
    from ..atlas import spectra_atlas

    cuts = "all" if args.cuts.strip() == "all" else split_list(args.cuts, ";")
    if not cuts:  # checked before a model is loaded
        raise ValueError(f"--cuts {args.cuts!r} names no cut; pass 'all' or cuts separated by "
                         "';', e.g. 'out|in,kh,kw;out,kh|in,kw'")
    from .arguments import spectra_model

    model, what = spectra_model(args)
    table = spectra_atlas(model, cuts=cuts, include_linear=args.include_linear).to_pandas()
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
        print(f"{what}: {len(table)} (layer, cut) rows written to {args.out}")
    else:
        import pandas as pd

        with pd.option_context("display.max_rows", None, "display.width", 200):
            print(f"{what}: {len(table)} (layer, cut) rows")
            print(table.to_string(index=False))
    return 0



def _add_sweep(subparsers: argparse._SubParsersAction) -> None:
    from ..study.sweep import DEFAULT_LEVELS, LEVEL_CRITERIA, SWEEP_MODES
    from .arguments import add_input_options, add_ray_option

    p = subcommand(
        subparsers, _cmd_sweep,
        "accuracy of a checkpoint or model truncated over layers x cuts x levels",
        epilog="examples:\n"
               "  tnconv sweep ~/.cache/tnconv/checkpoints/cnn4-fashion-mnist.pt --out s.csv\n"
               "  tnconv sweep cnn4 --dataset fashion-mnist --cuts 'out|in,kh,kw' "
               "'out,kh|in,kw' \\\n      --levels 1 0.5 0.1 --layers 'block*.conv' "
               "--mode all --test-subset 1000 --out all.jsonl")
    p.add_argument("source",
                   help="a checkpoint written by 'tnconv train', a model name (the cached trained "
                        "model, trained now if there is none; or with --weights / --state-dict) "
                        "or package.module:callable (with --state-dict FILE)")
    p.add_argument("--dataset", default=None, metavar="DATA",
                   help="a dataset name (its test split), an ImageFolder folder or "
                        "package.module:callable (default: the checkpoint's dataset)")
    p.add_argument("--out", type=Path, required=True, metavar="FILE",
                   help="the rows, as .csv or .jsonl (appended to: a rerun resumes)")
    p.add_argument("--cuts", nargs="+", default=["all"], metavar="CUT",
                   help="'all' (every bipartition, default) or cut strings, e.g. 'out,kh|in,kw'")
    p.add_argument("--levels", nargs="+", type=float, default=list(DEFAULT_LEVELS),
                   metavar="L", help="levels of --criterion (default: kept fractions "
                                     f"{' '.join(map(str, DEFAULT_LEVELS))})")
    p.add_argument("--criterion", choices=list(LEVEL_CRITERIA), default="keep",
                   help="what a level means (default: keep, the kept fraction)")
    p.add_argument("--layers", nargs="+", default=None, metavar="PATTERN",
                   help="layer names or fnmatch patterns (default: every conv layer)")
    p.add_argument("--mode", choices=list(SWEEP_MODES), default="single",
                   help="single: each layer alone; all: every selected layer at once "
                        "(default: single)")
    p.add_argument("--test-subset", type=int, default=None, metavar="N",
                   help="evaluate on N test images only (a fixed random subset)")
    p.add_argument("--batch-size", type=int, default=1000, help="evaluation batch size")
    p.add_argument("--include-linear", action="store_true", help="also the Linear layers")
    p.add_argument("--cache-bytes", type=int, default=None, metavar="N",
                   help="memory budget of the prefix cache in bytes (default: a quarter of the "
                        "device memory); beyond it, full evaluations streaming the data")
    add_input_options(p)
    add_ray_option(p)
    add_common_options(p)


def _cmd_sweep(args: argparse.Namespace) -> int:
    """Truncate a trained model's conv kernels along cuts at several levels, measuring test
    accuracy and loss (tnconv.sweep); rows go to --out as computed, so a rerun resumes."""
    from ..runtime import resolve_device
    from ..study.sweep import sweep
    from .arguments import describe_data, executor_options, load_input_data, load_input_model

    device = resolve_device(args.device)
    model, meta = load_input_model(args, args.source, device)
    data = load_input_data(args, args.dataset, meta, subset=args.test_subset)
    rows = sweep(model, data, layers=args.layers, levels=args.levels,
                 cuts="all" if args.cuts == ["all"] else args.cuts, criterion=args.criterion,
                 mode=args.mode, out=args.out, include_linear=args.include_linear,
                 batch_size=args.batch_size, cache_bytes=args.cache_bytes,
                 progress=not args.no_progress, **executor_options(args, device))
    base = rows[0]["baseline_accuracy"] if len(rows) else float("nan")
    print(f"{meta['model']} from {args.source} on {describe_data(data, args.dataset)} "
          f"({rows[0]['n'] if len(rows) else 0} test images, "
          f"baseline accuracy {base:.4f}): {len(rows)} {args.mode} rows, "
          f"{rows.info['rows_new']} new, in {args.out}")
    return 0


#: Registration functions of the subcommands, in --help order.
_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_train, _add_eval, _add_spectra, _add_sweep, add_study, add_compress, add_export]


def build_parser() -> argparse.ArgumentParser:
    """The ``tnconv`` argument parser with every subcommand registered.

    Examples
    --------
    >>> build_parser().parse_args(["eval", "model.pt"]).checkpoint.name
    'model.pt'
    """
    from .._version import __version__

    parser = Parser(
        prog="tnconv",
        description="Tensor networks for CNNs: train, evaluate and study models.",
    )
    parser.add_argument("--version", action="version", version=f"tnconv {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tnconv`` command with ``argv`` (default ``sys.argv[1:]``); return the status.

    Examples
    --------
    >>> main(["eval", "/nonexistent.pt"])  # doctest: +SKIP
    tnconv: error: no checkpoint at /nonexistent.pt
    2
    """
    parser = build_parser()
    args = parser.parse_args(None if argv is None else list(argv))
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except (ValueError, TypeError, OSError, ImportError) as exc:
        message = str(exc).strip().replace("\n", " ") or type(exc).__name__
        print(f"tnconv: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tnconv: interrupted", file=sys.stderr)
        return 130
