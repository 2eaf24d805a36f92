"""The study's profiles: one :class:`~tnconv.study.experiment.StudyConfig` per situation.

A *profile set* belongs to one study: ``resnet50`` (the main job, ``examples/resnet_cuts.py``,
``make run``) or ``cnn4`` (``examples/cnn4_cuts.py``). Each set has three profiles, chosen on the
command line by ``--full``, ``--quick`` and ``--tiny`` (see :func:`choose_profile`):

* ``full``: every conv layer x all 7 cuts x 6 levels on the whole test set (the default on a GPU);
* ``quick`` (``--quick``): the quick profile for a 2-core CPU, at most about 15 minutes from an
  empty cache (the default without a GPU; the ResNet-50 study runs it on He et al.'s ResNet-20,
  since ResNet-50 cannot be trained on such a CPU in that time);
* ``tiny``: the CI smoke run, a narrow cnn4 trained for a moment (about a minute).

Units: images, epochs, kept fractions of the singular values.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, NamedTuple

from ..registry import Registry
from .experiment import StudyConfig

__all__ = ["PROFILE_ALIASES", "PROFILE_FLAGS", "PROFILE_SETS", "ProfileSet", "choose_profile",
           "study_config"]

_LEVELS = (1.0, 0.75, 0.5, 0.25, 0.1, 0.05)


class ProfileSet(NamedTuple):
    """The profiles of one study and the script name used in its default run folder."""

    script: str
    profiles: dict[str, StudyConfig]


# CI: a narrow cnn4 trained for 2 epochs on 2000 images, 2 layers x 2 cuts x 3 levels
def _tiny(note: str) -> StudyConfig:
    return StudyConfig(
        model="cnn4", profile="tiny", train="subset", train_subset=2000, train_epochs=2,
        train_lr=0.2, model_kwargs={"widths": (8, 16, 16, 16)}, test_subset=500,
        layers=["block2.conv", "block4.conv"], cuts=["out|in,kh,kw", "out,kh|in,kw"],
        levels=(1.0, 0.5, 0.1), retrain_epochs=1, retrain_subset=2000, retrain_lr=0.05,
        batch_size=500, threads=1, note=note,
    )


# no GPU: 3 epochs on 10k images (a checkpoint keyed by these settings); 1000 test images
def _cpu(note: str) -> StudyConfig:
    return StudyConfig(
        model="cnn4", profile="quick", train="auto", train_subset=10000, train_epochs=3,
        test_subset=1000, levels=_LEVELS, retrain_epochs=2, retrain_subset=10000,
        batch_size=500, threads=1,  # one thread: faster on a busy 2-core CPU
        note=note,
    )


# no GPU, ResNet study: resnet20 trained by tnconv.train's CPU defaults (3 epochs, 92.7 %),
# then all 21 conv layers x 7 cuts x 5 levels on 500 test images, the all-layers sweep and 1
# retraining epoch on 5000 images. Measured from an empty cache on the shared 2-core CPU (load
# average 2.1 -> 1.0): 926 s, of which training 695 s, single sweep 154 s, all-layers 26 s,
# retraining 41 s; with the checkpoint cached, about 4 minutes
def _quick_resnet20() -> StudyConfig:
    return StudyConfig(
        model="resnet20", profile="quick", train="cache", test_subset=500,
        levels=(1.0, 0.5, 0.25, 0.1, 0.05), retrain_epochs=1, retrain_subset=5000,
        batch_size=500, threads=1,  # one thread: faster on a busy 2-core CPU
        note="Quick CPU profile: ResNet-50 cannot be trained on this CPU in 15 minutes, so the "
             "study runs on He et al.'s ResNet-20 (19 3x3 convolutions and two 1x1 "
             "projections, 0.27 M parameters), trained by tnconv.train's CPU defaults "
             "(3 epochs on all 60k images); every conv layer x 7 cuts x 5 levels (1.0, 0.5, "
             "0.25, 0.1, 0.05) on 500 test images, 1 retraining epoch on 5000 images; use a "
             "GPU and --full for ResNet-50.",
    )


#: The main study: ResNet-50 (all 53 conv layers x 7 cuts x 6 levels, bf16 on CUDA).
RESNET50 = ProfileSet("resnet_cuts", {
    "full": StudyConfig(model="resnet50", profile="full", test_subset=None, levels=_LEVELS,
                        retrain_epochs=3, retrain_subset=None, retrain_lr=0.02,
                        batch_size=1000),
    "quick": _quick_resnet20(),
    "tiny": _tiny("Tiny CI profile: a narrow cnn4 stands in for ResNet-50 (widths 8-16, "
                  "trained 2 epochs on 2000 images)."),
})

#: The four-layer CNN study (all its conv layers x all 7 cuts x 6 levels).
CNN4 = ProfileSet("cnn4_cuts", {
    "full": StudyConfig(model="cnn4", profile="full", test_subset=None, levels=_LEVELS,
                        retrain_epochs=3, retrain_subset=None, batch_size=1000),
    "quick": _cpu("Quick CPU profile: cnn4 trained 3 epochs on 10k images (cached in a checkpoint "
                  "keyed by these settings), 1000 test images, 6 levels, 2 retraining epochs on "
                  "10k images."),
    "tiny": _tiny("Tiny CI profile: a narrow cnn4 (widths 8-16) trained 2 epochs on 2000 "
                  "images."),
})

#: Profile sets by study name (``tnconv study --profiles NAME``).
PROFILE_SETS: Registry[ProfileSet] = Registry("profile set", {"resnet50": RESNET50,
                                                             "cnn4": CNN4})
#: Command-line flag -> profile name.
PROFILE_FLAGS: dict[str, str] = {"full": "full", "quick": "quick", "tiny": "tiny"}
#: Old profile names still accepted (``cpu`` was the quick profile's name before 0.2).
PROFILE_ALIASES: dict[str, str] = {"cpu": "quick"}


def choose_profile(*, full: bool = False, quick: bool = False, tiny: bool = False,
                   cuda: bool = False) -> str:
    """The profile named by the flags; without one, ``full`` on a GPU and ``quick`` elsewhere.

    Parameters
    ----------
    full, quick, tiny
        The command-line flags (at most one is set).
    cuda
        Whether the study runs on a CUDA device.

    Examples
    --------
    >>> choose_profile(tiny=True), choose_profile(cuda=True)
    ('tiny', 'full')
    """
    chosen = [PROFILE_FLAGS[k] for k, v in (("full", full), ("quick", quick), ("tiny", tiny))
              if v]
    if len(chosen) > 1:
        raise ValueError(f"choose one profile, got {chosen}")
    if chosen:
        return chosen[0]
    return "full" if cuda else "quick"


def study_config(profiles: str | ProfileSet = "resnet50", *, full: bool = False,
                 quick: bool = False, tiny: bool = False, device: str = "auto",
                 out: str | None = None, test_subset: int | None = None,
                 model: str | None = None, **options: Any) -> StudyConfig:
    """The profile chosen by the flags (else by the device), with options applied.

    This is what ``tnconv study`` and the example scripts run.

    Parameters
    ----------
    profiles
        A name of :data:`PROFILE_SETS` (``"resnet50"`` or ``"cnn4"``) or a :class:`ProfileSet`.
    full, quick, tiny
        The profile flags (see :func:`choose_profile`); without one, ``full`` on a GPU and the
        ``quick`` profile elsewhere (saying so).
    device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:1"``, ...
    out
        The run folder; default ``runs/<script>-<dataset>-<profile>``.
    test_subset
        Test images; ``0`` means the whole test split, ``None`` the profile's.
    model
        Another model than the profile's (its ``model_kwargs`` are dropped and the note says
        so).
    **options
        Other :class:`StudyConfig` fields; ``None`` values keep the profile's.

    Examples
    --------
    >>> cfg = study_config("cnn4", tiny=True, levels=(1.0, 0.5))
    >>> cfg.profile, cfg.levels, cfg.out
    ('tiny', (1.0, 0.5), 'runs/cnn4_cuts-fashion-mnist-tiny')
    """
    from ..runtime import resolve_device

    pset = PROFILE_SETS[profiles] if isinstance(profiles, str) else profiles
    flagged = full or quick or tiny
    name = choose_profile(full=full, quick=quick, tiny=tiny,
                          cuda=not flagged and resolve_device(device).type == "cuda")
    if not flagged and name == "quick":
        print("no GPU: using the quick CPU profile (a test subset, fewer levels, short "
              "retraining); pass --full to run everything")
    base = pset.profiles[PROFILE_ALIASES.get(name, name)]
    cfg = dataclasses.replace(base, device=device, model=model or base.model,
                              **{k: v for k, v in options.items() if v is not None})
    if test_subset is not None:
        cfg.test_subset = test_subset or None
    if model and model != base.model:
        cfg = dataclasses.replace(cfg, note=f"model {model} chosen on the command line",
                                  model_kwargs={})
    cfg.out = out or os.path.join("runs", f"{pset.script}-{cfg.dataset}-{name}")
    return cfg
