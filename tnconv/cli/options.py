"""Building blocks of the ``tnconv`` command line, shared by every module of
:mod:`tnconv.cli` that adds a subcommand.

A subcommand is registered by ``add_<name>(subparsers)`` and run by ``cmd_<name>(args)`` (or
``_cmd_<name>``): :func:`subcommand` names it after the run function and takes its docstring as
the description of ``tnconv <name> --help``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

__all__ = ["Parser", "Formatter", "subcommand", "add_common_options", "split_list"]


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line (``tnconv train: error: ...``)."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class Formatter(argparse.HelpFormatter):
    """Wraps one-paragraph texts; keeps texts with line breaks (the examples) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def subcommand(subparsers: argparse._SubParsersAction, func: Callable[..., int], summary: str,
               **texts: str) -> argparse.ArgumentParser:
    """Register the subcommand run by ``func`` (``cmd_<name>`` or ``_cmd_<name>``).

    Its docstring is the description of ``tnconv <name> --help``; ``summary`` is the line in
    ``tnconv --help``; ``texts`` (``epilog=...``) go to ``add_parser``.

    Examples
    --------
    >>> parser = Parser(prog="tnconv")
    >>> def cmd_hello(args):
    ...     "Say hello."
    ...     return 0
    >>> _ = subcommand(parser.add_subparsers(), cmd_hello, "say hello")
    >>> parser.parse_args(["hello"]).func is cmd_hello
    True
    """
    name = func.__name__.removeprefix("_").removeprefix("cmd_")
    description = " ".join((func.__doc__ or summary).split())
    parser = subparsers.add_parser(name, help=summary, description=description,
                                   formatter_class=Formatter, **texts)
    parser.set_defaults(func=func)
    return parser


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--device``, ``--seed``, ``--data-root``, ``--download`` and ``--no-progress``.

    Examples
    --------
    >>> parser = Parser(prog="tnconv")
    >>> add_common_options(parser)
    >>> parser.parse_args([]).device
    'auto'
    """
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


def split_list(text: str, sep: str = ",") -> list[str]:
    """Split an option's value at ``sep``, dropping blanks.

    >>> split_list("a, b,,c")
    ['a', 'b', 'c']
    """
    return [v.strip() for v in text.split(sep) if v.strip()]
