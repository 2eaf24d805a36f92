"""Correlation compression of the four-layer CNN: spectra, truncation sweeps, retraining.

Trains (or loads from the checkpoint cache) the study's vanilla four-layer CNN, computes the
spectra atlas of its conv layers over all 7 cuts, sweeps single-layer and all-layers
truncations over cuts and levels, retrains the most aggressively truncated model that lost
accuracy (with and without keeping the truncation), and writes a run folder with CSV/JSON
tables, PNG plots and a Markdown summary (``summary.md``) of the findings.

    python examples/cnn4_cuts.py                 # quick CPU profile without a GPU, else --full
    python examples/cnn4_cuts.py --full --dataset cifar10
    python examples/cnn4_cuts.py --tiny          # the CI smoke run (about a minute)

The profiles (full / quick / tiny) are ``tnconv.study.profiles.PROFILE_SETS["cnn4"]``; this
script is ``tnconv study --profiles cnn4`` under its own name.
"""

from __future__ import annotations

import sys

from tnconv.cli import study_main

# -- configuration: the study's profile set (see tnconv/study/profiles.py) --------------------
PROFILES = "cnn4"


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the study, print where the results are."""
    return study_main(argv, profiles=PROFILES, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
