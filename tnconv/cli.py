"""The ``tnconv`` command line (also ``python -m tnconv``).

Each subcommand is registered by ``_add_<name>(subparsers)`` and run by ``_cmd_<name>(args)``,
which returns the exit status; add a subcommand by writing both and listing ``_add_<name>`` in
:data:`_SUBCOMMANDS`. Errors raised by tnconv (ValueError, TypeError) and by the file system
(OSError, e.g. FileNotFoundError) are printed as one line ``tnconv: error: ...`` and give
exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

__all__ = ["build_parser", "main"]

_MODELS = ("cnn4", "resnet50")
_DATASETS = ("fashion-mnist", "cifar10", "cifar100", "mnist")


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line (``tnconv train: error: ...``)."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"),
        help="where to run (default: auto = cuda when available, else cpu)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--data-root", type=Path, default=None, metavar="DIR",
        help="folder searched first for the dataset (then $TNCONV_DATA, the user cache, "
             "/usr/share/datasets/<name>)",
    )
    parser.add_argument(
        "--download", action="store_true",
        help="download the dataset into the user cache if it is found nowhere",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model and save a checkpoint",
        description="Train a model on a dataset with the defaults of "
                    "tnconv.train.TRAIN_DEFAULTS (options below override them), evaluate it "
                    "on the test split and save a checkpoint.",
        epilog="example: tnconv train --model cnn4 --dataset fashion-mnist --epochs 4 "
               "--device cpu --out cnn4-fmnist.pt",
    )
    p.add_argument("--model", required=True, choices=_MODELS, help="model to train")
    p.add_argument("--dataset", required=True, choices=_DATASETS, help="dataset")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: per model)")
    p.add_argument("--out", type=Path, default=None, metavar="PATH",
                   help="checkpoint path (default: ~/.cache/tnconv/checkpoints/"
                        "<model>-<dataset>.pt, or under $TNCONV_CACHE)")
    p.add_argument("--batch-size", type=int, default=None, help="images per step")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default=None)
    p.add_argument("--schedule", choices=("onecycle", "cosine", "constant"), default=None)
    p.add_argument("--subset", type=int, default=None, metavar="N",
                   help="train on N images only (a fixed random subset)")
    p.add_argument("--eval-subset", type=int, default=None, metavar="N",
                   help="evaluate on N test images only")
    _add_common(p)
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from .data import load_dataset
    from .models import get_model
    from .train import (
        default_checkpoint_path,
        evaluate,
        fit,
        resolve_device,
        save_checkpoint,
        train_config,
    )

    device = resolve_device(args.device)
    config = train_config(args.model, args.dataset, device)
    for key in ("epochs", "batch_size", "lr", "optimizer", "schedule"):
        value = getattr(args, key)
        if value is not None:
            config[key] = value
    train = load_dataset(args.dataset, "train", root=args.data_root, download=args.download)
    test = load_dataset(args.dataset, "test", root=args.data_root, download=args.download)
    if args.subset is not None:
        train = train.subset(args.subset, seed=args.seed)
    if args.eval_subset is not None:
        test = test.subset(args.eval_subset, seed=args.seed)
    torch.manual_seed(args.seed)
    model = get_model(args.model, train.num_classes, train.in_channels)
    print(f"training {args.model} on {train.name} ({len(train)} images) on {device}: "
          + ", ".join(f"{k}={v}" for k, v in config.items()))
    history = fit(model, train, device=device, seed=args.seed,
                  progress=not args.no_progress, **config)
    result = evaluate(model, test)
    meta = {
        "model": args.model, "dataset": train.name, "num_classes": train.num_classes,
        "in_channels": train.in_channels, "accuracy": result["accuracy"],
        "test_loss": result["loss"], "epochs": config["epochs"], "train_config": config,
        "seed": args.seed, "device": str(device), "train_images": len(train),
        "test_images": len(test), "history": history,
    }
    if "top5" in result:
        meta["top5"] = result["top5"]
    out = args.out if args.out is not None else default_checkpoint_path(args.model, train.name)
    path = save_checkpoint(model, out, meta=meta)
    print(f"test accuracy {result['accuracy']:.4f} (loss {result['loss']:.4f}, "
          f"{result['n']} images); saved {path}")
    return 0


def _add_eval(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint on its dataset's test split",
        description="Load a checkpoint written by 'tnconv train' and report its test accuracy "
                    "and loss (and top-5 accuracy for CIFAR-100).",
        epilog="example: tnconv eval ~/.cache/tnconv/checkpoints/cnn4-fashion-mnist.pt",
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint file")
    p.add_argument("--dataset", default=None, choices=_DATASETS,
                   help="dataset to evaluate on (default: the checkpoint's)")
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--subset", type=int, default=None, metavar="N",
                   help="evaluate on N images only")
    p.add_argument("--batch-size", type=int, default=1000)
    _add_common(p)
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .train import evaluate, load_checkpoint, resolve_device

    device = resolve_device(args.device)
    model, meta = load_checkpoint(args.checkpoint, map_location=device)
    dataset = args.dataset or meta.get("dataset")
    if dataset is None:
        raise ValueError(f"{args.checkpoint} does not name its dataset; pass --dataset")
    data = load_dataset(dataset, args.split, root=args.data_root, download=args.download)
    for key, have in (("in_channels", data.in_channels), ("num_classes", data.num_classes)):
        if meta[key] != have:
            raise ValueError(
                f"{args.checkpoint} has {key}={meta[key]} but {data.name} has {have}; "
                "evaluate it on a dataset of the same shape"
            )
    if args.subset is not None:
        data = data.subset(args.subset, seed=args.seed)
    result = evaluate(model, data, batch_size=args.batch_size, device=device)
    line = (f"{meta['model']} on {data.name} ({args.split}, {result['n']} images): "
            f"accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f}")
    if "top5" in result:
        line += f", top-5 {result['top5']:.4f}"
    print(line)
    return 0


def _add_spectra(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "spectra",
        help="spectra atlas of a model's conv kernels over cuts (entropy, ranks, norm loss)",
        description="Cut every convolution kernel of a model along a set of cuts and report, "
                    "per (layer, cut): full rank, entanglement entropy, rank needed for 1%, "
                    "10% and 50% relative error, and norm loss at half rank "
                    "(tnconv.spectra_atlas).",
        epilog="examples: tnconv spectra ~/.cache/tnconv/checkpoints/cnn4-fashion-mnist.pt; "
               "tnconv spectra resnet50 --cuts 'out|in,kh,kw;out,kh|in,kw' --out atlas.csv",
    )
    p.add_argument("source", help="a checkpoint written by 'tnconv train', or a model name "
                                  "(cnn4, resnet50 or any torchvision classifier; random init)")
    p.add_argument("--cuts", default="all",
                   help="'all' (every bipartition, default) or cuts separated by ';'")
    p.add_argument("--num-classes", type=int, default=10,
                   help="classes of a model built by name (default: 10)")
    p.add_argument("--in-channels", type=int, default=3,
                   help="input channels of a model built by name (default: 3)")
    p.add_argument("--include-linear", action="store_true", help="also the Linear layers")
    p.add_argument("--out", type=Path, default=None, metavar="PATH",
                   help="write the table as CSV (default: print it)")
    p.set_defaults(func=_cmd_spectra)


def _cmd_spectra(args: argparse.Namespace) -> int:
    from . import spectra_atlas

    source = Path(args.source).expanduser()
    if source.suffix == ".pt" or source.exists():
        from .train import load_checkpoint

        model, meta = load_checkpoint(source, map_location="cpu")
        what = f"{meta['model']} from {source}"
    else:
        from .models import get_model

        model = get_model(args.source, args.num_classes, args.in_channels)
        what = f"{args.source} (random init)"
    cuts = "all" if args.cuts.strip() == "all" else [
        c.strip() for c in args.cuts.split(";") if c.strip()]
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


#: Registration functions of the subcommands, in --help order.
_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_train, _add_eval, _add_spectra]


def build_parser() -> argparse.ArgumentParser:
    """The ``tnconv`` argument parser with every subcommand registered.

    Examples
    --------
    >>> build_parser().parse_args(["eval", "model.pt"]).checkpoint.name
    'model.pt'
    """
    from . import __version__

    parser = _Parser(
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
    except (ValueError, TypeError, OSError) as exc:
        message = str(exc).strip().replace("\n", " ") or type(exc).__name__
        print(f"tnconv: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tnconv: interrupted", file=sys.stderr)
        return 130
