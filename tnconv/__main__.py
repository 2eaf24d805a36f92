"""``python -m tnconv``: the tnconv command line (see :mod:`tnconv.cli`)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
