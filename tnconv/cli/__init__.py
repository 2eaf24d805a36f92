"""The ``tnconv`` command: ``train``, ``eval``, ``spectra``, ``sweep``, ``study``, ``compress``,
``export``.

::

    options.py            parser helpers shared by every subcommand (Parser, subcommand, ...)
    arguments.py          what the model and data arguments may name (registry names,
                          checkpoints, ``module:factory`` specs, image folders) and loading them
    commands.py           train, eval, spectra, sweep and the parser of the whole command
    study_command.py      study (and ``study_main``, the examples' entry point)
    compress_command.py   compress
    export_command.py     export (to ONNX)

``tnconv.cli:main`` is the console script and ``python -m tnconv`` calls it.

Examples
--------
>>> from tnconv.cli import build_parser
>>> sorted(build_parser()._subparsers._group_actions[0].choices)[:3]
['compress', 'eval', 'export']
"""

from __future__ import annotations

from .commands import build_parser, main
from .study_command import study_main

__all__ = ["build_parser", "main", "study_main"]
