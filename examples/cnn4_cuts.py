"""Correlation compression of the four-layer CNN: spectra, truncation sweeps, retraining.

Trains (or loads from the checkpoint cache) the study's vanilla four-layer CNN, computes the
spectra atlas of its conv layers over all 7 cuts, sweeps single-layer and all-layers
truncations over cuts and levels, retrains the most aggressively truncated model that lost
accuracy (with and without keeping the truncation), and writes a run folder with CSV/JSON
tables, PNG plots and a Markdown summary (``summary.md``) of the findings.

    python examples/cnn4_cuts.py                 # quick CPU profile without a GPU, else --full
    python examples/cnn4_cuts.py --full --dataset cifar10
    python examples/cnn4_cuts.py --tiny          # the CI smoke run (about a minute)
"""

from __future__ import annotations

import sys

from tnconv.study.experiment import StudyConfig, build_parser, config_from_args, run_study

# -- configuration: one profile per situation (units: images, epochs, kept fractions) ---------
PROFILES = {
    # everything: all conv layers x all 7 cuts x 6 levels on the whole test set
    "full": StudyConfig(
        model="cnn4", profile="full", test_subset=None,
        levels=(1.0, 0.75, 0.5, 0.25, 0.1, 0.05), retrain_epochs=3, retrain_subset=None,
        batch_size=1000,
    ),
    # no GPU: the cached checkpoint if any, else 3 epochs on 10k images; 1000 test images
    "cpu": StudyConfig(
        model="cnn4", profile="cpu", train="auto", train_subset=10000, train_epochs=3,
        test_subset=1000, levels=(1.0, 0.75, 0.5, 0.25, 0.1, 0.05), retrain_epochs=2,
        retrain_subset=10000, batch_size=500, threads=1,  # one thread: faster on a busy 2-core CPU
        note="Quick CPU profile: the cached checkpoint if there is one (else cnn4 trained 3 "
             "epochs on 10k images), 1000 test images, 6 levels, 2 retraining epochs on 10k "
             "images.",
    ),
    # CI: a narrow cnn4 trained for 2 epochs on 2000 images, 2 layers x 2 cuts x 2 levels
    "tiny": StudyConfig(
        model="cnn4", profile="tiny", train="subset", train_subset=2000, train_epochs=2,
        train_lr=0.2, model_kwargs={"widths": (8, 16, 16, 16)}, test_subset=500,
        layers=["block2.conv", "block4.conv"], cuts=["out|in,kh,kw", "out,kh|in,kw"],
        levels=(1.0, 0.5, 0.1), retrain_epochs=1, retrain_subset=2000, retrain_lr=0.05,
        batch_size=500, threads=1,
        note="Tiny CI profile: a narrow cnn4 (widths 8-16) trained 2 epochs on 2000 images.",
    ),
}


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the study, print where the results are."""
    parser = build_parser(__doc__.splitlines()[0], PROFILES)
    cfg = config_from_args(parser.parse_args(argv), PROFILES, script="cnn4_cuts")
    result = run_study(cfg)
    print(f"summary: {result['out']}/summary.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
