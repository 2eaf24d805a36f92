"""``tnconv compress``: a trained model, compressed to a budget, saved as a checkpoint.

The command is a thin shell over :func:`tnconv.compress`: the model argument is anything the
other subcommands accept (a checkpoint, a registry name trained or loaded from the cache, a
torchvision name with ``--weights``, ``package.module:callable`` with ``--state-dict``); the data
is a dataset name, an ImageFolder folder or ``package.module:callable``. The compressed model
is written with :func:`tnconv.compression.save_compressed` (the factored layers are rebuilt on
loading, so ``tnconv eval small.pt`` works) and the report next to it as JSON.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .options import add_common_options, subcommand

__all__ = ["add_compress", "cmd_compress"]


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"need a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"need a number in (0, 1], got {value}")
    return value


def _open_fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"need a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"need a number in (0, 1), got {value}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"need an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"need an integer >= 1, got {value}")
    return value


def _described(registry: Any) -> str:
    """``name: description; ...`` of a compression registry (its entries' ``description``)."""
    return "; ".join(f"{name}: {entry.description}" for name, entry in registry.items())


def add_compress(subparsers: argparse._SubParsersAction) -> None:
    """Register ``tnconv compress``.

    Examples
    --------
    >>> from tnconv.cli import build_parser
    >>> args = build_parser().parse_args(["compress", "cnn4", "--params", "0.25",
    ...                                   "--data", "fashion-mnist", "--out", "small.pt"])
    >>> args.params, args.allocate, args.dataset
    (0.25, 'sensitivity', 'fashion-mnist')
    """
    from ..compression import ALLOCATIONS, FITS, METHODS
    from .arguments import add_input_options

    p = subcommand(
        subparsers, cmd_compress,
        "compress a trained model to a budget of parameters, FLOPs or error",
        epilog="examples:\n"
               "  tnconv compress cnn4 --params 0.25 --allocate sensitivity "
               "--data fashion-mnist --epochs 1 --out small.pt\n"
               "  tnconv compress model.pt --flops 0.5 --allocate energy --out small.pt\n"
               "  tnconv compress cnn4 --latency 0.5 --batch-size 64 --rank-multiple 8 "
               "--data fashion-mnist --out fast.pt\n"
               "  tnconv eval small.pt")
    p.add_argument("model", metavar="MODEL",
                   help="a checkpoint, a model name (the cached trained model, trained now if "
                        "there is none; or with --weights / --state-dict) or "
                        "package.module:callable (with --state-dict FILE)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--params", type=_fraction, default=None, metavar="F",
                        help="keep this fraction of the selected layers' conv parameters "
                             "(default 0.25 when no budget is given)")
    budget.add_argument("--flops", type=_fraction, default=None, metavar="F",
                        help="keep this fraction of their FLOPs at the data's image size")
    budget.add_argument("--max-error", type=_fraction, default=None, metavar="E",
                        help="relative Frobenius error allowed in every layer")
    budget.add_argument("--latency", type=_open_fraction, default=None, metavar="T",
                        help="a latency budget: the compressed model's inference form runs in "
                             "at most T times the dense one's, measured at --batch-size on "
                             "--device (the FLOPs fraction is searched)")
    p.add_argument("--method", choices=list(METHODS), default="auto",
                   help="factorization of the layers (default: auto, the best per layer): "
                        f"{_described(METHODS)}")
    p.add_argument("--allocate", choices=list(ALLOCATIONS), default="sensitivity",
                   help="how the budget is shared by the layers (default: sensitivity, which "
                        f"needs --data): {_described(ALLOCATIONS)}")
    p.add_argument("--fit", choices=list(FITS), default="auto",
                   help="factors of the kernels (weights) or of each layer's outputs on the data "
                        "(data; sensitivity only; default: auto): "
                        f"{_described(FITS)}")
    p.add_argument("--cuts", nargs="+", default=["auto"], metavar="CUT",
                   help="'auto' (per layer, the best cut) or cut strings, e.g. 'out,kh|in,kw'")
    p.add_argument("--layers", nargs="+", default=["*"], metavar="PATTERN",
                   help="layer names or fnmatch patterns (default: every conv layer)")
    p.add_argument("--data", "--dataset", dest="dataset", default=None, metavar="DATA",
                   help="a dataset name, an ImageFolder folder or package.module:callable: its "
                        "test split measures sensitivity and accuracy, its train split "
                        "fine-tunes (default: the checkpoint's dataset)")
    p.add_argument("--subset", type=int, default=2000, metavar="N",
                   help="test images used for sensitivity and accuracy (default: 2000)")
    p.add_argument("--epochs", type=int, default=0, help="fine-tuning epochs (default: 0)")
    p.add_argument("--train-subset", type=int, default=None, metavar="N",
                   help="fine-tune on N training images only")
    p.add_argument("--out", type=Path, required=True, metavar="FILE",
                   help="the compressed checkpoint (.pt); the report goes to FILE.json")
    p.add_argument("--rank-multiple", type=_positive, default=1, metavar="N",
                   help="every rank a multiple of N, e.g. 8 (each leg's full rank aside; "
                        "default: 1)")
    p.add_argument("--batch-size", type=_positive, default=256, metavar="N",
                   help="batch of the latency measurements (default: 256)")
    p.add_argument("--no-latency", action="store_true",
                   help="skip the latency measurement (of the inference forms)")
    add_input_options(p)
    add_common_options(p)


def _budget(args: argparse.Namespace) -> dict[str, float]:
    for key in ("params", "flops", "max_error"):
        if getattr(args, key) is not None:
            return {key: getattr(args, key)}
    return {} if args.latency is not None else {"params": 0.25}


def _data(args: argparse.Namespace, meta: dict[str, Any]) -> tuple[Any, Any]:
    """The held-out data (test split subset) and the fine-tuning data (train split or None)."""
    from .arguments import load_input_data

    if args.dataset is None and meta.get("dataset") is None:
        if args.allocate == "sensitivity" or args.epochs:
            raise ValueError("--allocate sensitivity and --epochs need data: pass --data NAME "
                             "(a dataset name, an ImageFolder folder or package.module:callable)")
        return None, None
    test = load_input_data(args, args.dataset, meta, split="test", subset=args.subset)
    train = (load_input_data(args, args.dataset, meta, split="train", subset=args.train_subset)
             if args.epochs else None)
    return test, train


def cmd_compress(args: argparse.Namespace) -> int:
    """Compress a trained model's convolutions to a budget (tnconv.compress): choose each
    layer's factorization and rank, optionally fine-tune, save the factored model and its report,
    and print the per-layer table."""
    from ..compression import compress, save_compressed
    from ..runtime import resolve_device
    from .arguments import load_input_model

    if args.epochs < 0:
        raise ValueError(f"--epochs must be >= 0, got {args.epochs}")
    if args.latency is not None and args.no_latency:
        raise ValueError("--latency T (a latency budget) measures latencies: drop --no-latency")
    device = resolve_device(args.device)
    model, meta = load_input_model(args, args.model, device)
    test, train = _data(args, meta)
    small, report = compress(
        model, test, **_budget(args), method=args.method, allocate=args.allocate,
        cuts=args.cuts[0] if args.cuts == ["auto"] else args.cuts,
        layers=args.layers[0] if len(args.layers) == 1 else args.layers,
        epochs=args.epochs, train_data=train, device=device,
        progress=not args.no_progress, fit=args.fit, rank_multiple=args.rank_multiple,
        batch_size=args.batch_size,
        latency=args.latency if args.latency is not None else not args.no_latency)
    keep = {k: meta[k] for k in ("model", "dataset", "num_classes", "in_channels", "model_kwargs")
            if k in meta}
    path = save_compressed(small, args.out, meta=keep, report=report)
    report_path = report.save_json(path.with_suffix(path.suffix + ".json"))
    print(report)
    print(f"saved {path} (report: {report_path})")
    return 0
