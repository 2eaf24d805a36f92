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
so that profile runs the same study on He et al.'s CIFAR ResNet-20 (``tnconv.cifar_resnets``:
three stages of 16-32-64 channels, 19 3 x 3 convolutions and two 1 x 1 projection shortcuts,
0.27 M parameters). It trains ResNet-20 with ``tnconv.train``'s CPU defaults (3 epochs on all of
Fashion-MNIST, >= 92 %; skipped when its checkpoint is cached), then runs the atlas, the
single-layer sweep over all 21 conv layers x 7 cuts x 5 levels (100%, 50%, 25%, 10%, 5%) on 500
test images, the all-layers sweep and 1 retraining epoch on 5000 images: 15.4 minutes from an
empty cache on a shared 2-core CPU (11.6 of them training), 4 with the checkpoint cached
(``--model resnet50`` forces ResNet-50 anyway; the four-layer CNN is ``examples/cnn4_cuts.py``).

    python examples/resnet_cuts.py                             # no GPU: ResNet-20, quick profile
    python examples/resnet_cuts.py --full                      # on a GPU (the default there)
    python examples/resnet_cuts.py --full --dataset cifar100   # the study's setting
    python examples/resnet_cuts.py --tiny                      # the CI smoke run

The profiles (full / quick / tiny) are ``tnconv.study.profiles.PROFILE_SETS["resnet50"]``; this
script is ``tnconv study --profiles resnet50`` under its own name.
"""

from __future__ import annotations

import sys

from tnconv.cli import study_main

# -- configuration: the study's profile set (see tnconv/study/profiles.py) --------------------
PROFILES = "resnet50"


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the study, print where the results are."""
    return study_main(argv, profiles=PROFILES, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
