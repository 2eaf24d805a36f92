"""Correlation compression of ResNet-50: spectra, truncation sweeps over 53 conv layers, retraining.

The main job of the study. For ResNet-50 (torchvision structure, CIFAR stem) trained on the
dataset (or loaded from the checkpoint cache): the spectra atlas of every conv layer over all
7 cuts; the single-layer sweep over all conv layers x 7 cuts x 6 levels (kept fractions 100%,
75%, 50%, 25%, 10%, 5%); all-layers truncation per cut and level; retraining of the most
aggressively truncated model that lost accuracy, with and without keeping the truncation; and a
run folder with CSV/JSON tables, PNG plots (entropy per layer and cut, accuracy against norm
loss per cut, compressibility against depth, the recovery curve) and ``summary.md``.

Without a GPU the script picks the quick CPU profile by itself and says so: ResNet-50 cannot be
trained on a 2-core CPU in 15 minutes (one forward pass of 64 images takes about 15 s there),
so that profile runs the same study on the four-layer CNN (``--model resnet50`` forces
ResNet-50 anyway).

    python examples/resnet_cuts.py --full                      # on a GPU (the default there)
    python examples/resnet_cuts.py --full --dataset cifar100   # the study's setting
    python examples/resnet_cuts.py --tiny                      # the CI smoke run
"""

from __future__ import annotations

import sys

from tnconv.study.experiment import StudyConfig, build_parser, config_from_args, run_study

# -- configuration: one profile per situation (units: images, epochs, kept fractions) ---------
PROFILES = {
    # the study: all 53 conv layers x 7 cuts x 6 levels, the whole test set, bf16 on CUDA
    "full": StudyConfig(
        model="resnet50", profile="full", test_subset=None,
        levels=(1.0, 0.75, 0.5, 0.25, 0.1, 0.05), retrain_epochs=3, retrain_subset=None,
        retrain_lr=0.02, batch_size=1000,
    ),
    # no GPU: ResNet-50 is out of reach, the same study on cnn4 (see the module docstring)
    "cpu": StudyConfig(
        model="cnn4", profile="cpu", train="auto", train_subset=10000, train_epochs=3,
        test_subset=1000, levels=(1.0, 0.75, 0.5, 0.25, 0.1, 0.05), retrain_epochs=2,
        retrain_subset=10000, batch_size=500, threads=1,  # one thread: faster on a busy 2-core CPU
        note="Quick CPU profile: ResNet-50 cannot be trained on this CPU in 15 minutes, so "
             "the study runs on cnn4 (the cached checkpoint if there is one, else trained 3 "
             "epochs on 10k images; 1000 test images, 6 levels, 2 retraining epochs on 10k "
             "images); use a GPU and --full for ResNet-50.",
    ),
    # CI: a narrow cnn4 trained for 2 epochs on 2000 images, 2 layers x 2 cuts x 2 levels
    "tiny": StudyConfig(
        model="cnn4", profile="tiny", train="subset", train_subset=2000, train_epochs=2,
        train_lr=0.2, model_kwargs={"widths": (8, 16, 16, 16)}, test_subset=500,
        layers=["block2.conv", "block4.conv"], cuts=["out|in,kh,kw", "out,kh|in,kw"],
        levels=(1.0, 0.5, 0.1), retrain_epochs=1, retrain_subset=2000, retrain_lr=0.05,
        batch_size=500, threads=1,
        note="Tiny CI profile: a narrow cnn4 stands in for ResNet-50 (widths 8-16, trained "
             "2 epochs on 2000 images).",
    ),
}


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the study, print where the results are."""
    parser = build_parser(__doc__.splitlines()[0], PROFILES)
    cfg = config_from_args(parser.parse_args(argv), PROFILES, script="resnet_cuts")
    result = run_study(cfg)
    print(f"summary: {result['out']}/summary.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
