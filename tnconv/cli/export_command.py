"""``tnconv export``: a checkpoint's model as an ONNX file, checked by ONNX Runtime.

The command is a thin shell over :func:`tnconv.export_onnx`: the model argument is a checkpoint
saved by ``tnconv compress`` / :func:`tnconv.save_compressed` or ``tnconv train`` /
:func:`tnconv.save_checkpoint`; the example input is a random batch (``--seed``) of
``--batch`` inputs of ``--input-size``, on which the factorized layers' forms are chosen and
ONNX Runtime is checked. Needs ``pip install "tnconv[deploy]"``.

Examples
--------
>>> from tnconv.cli import build_parser
>>> args = build_parser().parse_args(["export", "small.pt", "--onnx", "small.onnx",
...                                   "--input-size", "3,32,32"])
>>> args.input_size, args.batch, args.path
((3, 32, 32), 1, 'measured')
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_export", "cmd_export"]


def _sizes(text: str) -> tuple[int, ...]:
    """``"3,32,32"`` -> ``(3, 32, 32)``: positive integers, comma-separated."""
    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"need comma-separated positive integers such as "
                                         f"3,32,32, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"need comma-separated positive integers such as "
                                         f"3,32,32, got {text!r}")
    return sizes


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"need a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"need a positive integer, got {value}")
    return value


def add_export(subparsers: argparse._SubParsersAction) -> None:
    """Register ``tnconv export``.

    Examples
    --------
    >>> from tnconv.cli import build_parser
    >>> args = build_parser().parse_args(["export", "m.pt", "--onnx", "m.onnx",
    ...                                   "--input-size", "1,28,28", "--batch", "8", "--no-check"])
    >>> args.batch, args.no_check, args.device
    (8, True, 'auto')
    """
    from ..inference import INFERENCE_PATHS
    from .options import subcommand

    p = subcommand(
        subparsers, cmd_export, "export a checkpoint's model to ONNX (inference form)",
        epilog="examples:\n"
               "  tnconv compress cnn4 --params 0.25 --data fashion-mnist --out small.pt\n"
               "  tnconv export small.pt --onnx small.onnx --input-size 1,28,28 --batch 64")
    p.add_argument("model", metavar="MODEL",
                   help="a checkpoint saved by 'tnconv compress' or 'tnconv train'")
    p.add_argument("--onnx", type=Path, required=True, metavar="FILE",
                   help="the ONNX file to write (its folder must exist)")
    p.add_argument("--input-size", type=_sizes, required=True, metavar="C,H,W",
                   help="the shape of one input, e.g. 3,32,32")
    p.add_argument("--batch", type=_positive, default=1, metavar="N",
                   help="batch size at which the factorized layers' forms are chosen and ONNX "
                        "Runtime is checked (the file takes any batch size; default: 1)")
    p.add_argument("--path", choices=list(INFERENCE_PATHS), default="measured",
                   help="each factorized layer's form: the faster one timed at --batch "
                        "(measured, default), the one with fewer FLOPs, dense or factored")
    p.add_argument("--opset", type=_positive, default=None, metavar="N",
                   help="ONNX opset version (default: the exporter's)")
    p.add_argument("--no-check", action="store_true",
                   help="do not run the file in ONNX Runtime to compare it with torch")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the forms are measured (default: auto = cuda when available)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random example batch (default: 0)")


def cmd_export(args: argparse.Namespace) -> int:
    """Export a checkpoint's model to an ONNX file in its inference form (tnconv.export_onnx):
    factorized layers as plain convolutions on the faster path, batch norm folded, a dynamic
    batch dimension; the file passes onnx.checker and, unless --no-check, ONNX Runtime (CPU)
    matches torch within 1e-4 relative at two batch sizes. Nothing is written on failure."""
    import torch

    from ..export import export_onnx
    from ..runtime import resolve_device

    device = resolve_device(args.device)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, *args.input_size, generator=g).to(device)
    report = export_onnx(args.model, args.onnx, x, check=not args.no_check,
                         path_choice=args.path, opset=args.opset, device=device)
    print(report)
    return 0
