"""``tnconv study`` and :func:`study_main`, the study's command line on its own.

``examples/resnet_cuts.py`` and ``examples/cnn4_cuts.py`` call :func:`study_main` with their
profile set; ``tnconv study --profiles NAME`` is the same study under the one command.

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> add_study(parser.add_subparsers())
>>> args = parser.parse_args(["study", "--tiny", "--profiles", "cnn4", "--levels", "1,0.5"])
>>> args.tiny, args.profiles, args.levels
(True, 'cnn4', (1.0, 0.5))
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from ..data import DATASETS
from .options import split_list, subcommand

__all__ = ["add_study", "study_main"]


# -- the study: `tnconv study` and the example scripts ----------------------------------------

def _levels(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in split_list(text))
    except ValueError:
        vals = ()
    if not vals or any(not 0 < v <= 1 for v in vals):
        raise argparse.ArgumentTypeError(f"levels must be comma-separated fractions in (0, 1], "
                                         f"got {text!r}")
    return vals


def _add_study_options(p: argparse.ArgumentParser) -> None:
    """The study's options, shared by ``tnconv study`` and the example scripts."""
    from .arguments import add_input_options, add_ray_option

    g = p.add_mutually_exclusive_group()
    g.add_argument("--full", action="store_true",
                   help="run everything (all conv layers, all 7 cuts, 6 levels, the whole test "
                        "set, longer retraining); the default on a GPU")
    g.add_argument("--quick", action="store_true",
                   help="the quick profile (the default without a GPU; <= 15 min on 2 cores)")
    g.add_argument("--tiny", action="store_true",
                   help="the tiny CI profile (a narrow model trained briefly; about a minute)")
    p.add_argument("--dataset", metavar="DATA",
                   help=f"a dataset name ({', '.join(DATASETS)}; default fashion-mnist, "
                        "cifar10/cifar100 is the study's setting), an ImageFolder folder or "
                        "package.module:callable")
    p.add_argument("--model", help="a model name for tnconv.models.get_model (overrides the "
                                   "profile's), a checkpoint or package.module:callable")
    add_input_options(p)
    add_ray_option(p)
    p.add_argument("--out", help="run folder (default runs/<script>-<dataset>-<profile>); "
                                 "rerunning with the same folder resumes the sweeps")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--retrain-epochs", type=int,
                   help="retraining epochs of the truncated model (default: the profile's)")
    p.add_argument("--epochs", type=int, dest="retrain_epochs_old", help=argparse.SUPPRESS)
    p.add_argument("--train-epochs", type=int, help="training epochs of the model (default: "
                                                    "tnconv.train's defaults / the checkpoint)")
    p.add_argument("--levels", type=_levels,
                   help="kept fractions of the singular values, e.g. 1,0.75,0.5,0.25,0.1,0.05")
    p.add_argument("--layers", type=split_list,
                   help="comma-separated layer names or fnmatch patterns, e.g. 'layer4.*'")
    p.add_argument("--cuts", type=lambda text: split_list(text, ";"),
                   help="cuts separated by ';', e.g. 'out|in,kh,kw;out,kh|in,kw' "
                        "(default: all 7 bipartitions)")
    p.add_argument("--test-subset", type=int, help="number of test images (0: all)")
    p.add_argument("--batch-size", type=int, help="evaluation batch size")
    p.add_argument("--threshold", type=float,
                   help="largest accuracy drop counted as little loss (default 0.01)")
    p.add_argument("--threads", type=int,
                   help="CPU threads for torch (default: the profile's, 1 for the quick and "
                        "tiny profiles, which is faster on a busy 2-core CPU; else torch's)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _profiles_help(profile_set: Any) -> str:
    return "\n".join(f"  {k} (model {v.model}): "
                     f"{v.note or 'everything, as described above'}"
                     for k, v in profile_set.profiles.items())


def add_study(subparsers: argparse._SubParsersAction) -> None:
    from ..study.profiles import PROFILE_SETS

    sets = "\n\n".join(f"profiles of --profiles {name} (--full / --quick / --tiny):\n"
                     + _profiles_help(ps) for name, ps in PROFILE_SETS.items())
    p = subcommand(
        subparsers, _cmd_study,
        "the correlation-compression study: spectra, sweeps, retraining, a run folder",
        epilog="examples:\n"
               "  tnconv study                      # ResNet-50 on a GPU, else the quick CPU "
               "profile\n"
               "  tnconv study --full --dataset cifar100   # the study's setting, on a GPU\n"
               "  tnconv study --profiles cnn4 --tiny --out runs/tiny   # the CI smoke run\n\n"
               + sets)
    p.add_argument("--profiles", choices=list(PROFILE_SETS), default="resnet50",
                   help="the study and its profiles: resnet50 (examples/resnet_cuts.py, the "
                        "default) or cnn4 (examples/cnn4_cuts.py)")
    _add_study_options(p)


def _retrain_epochs(args: argparse.Namespace) -> int | None:
    """``--retrain-epochs``, or the deprecated ``--epochs`` (with a warning)."""
    old = getattr(args, "retrain_epochs_old", None)
    if old is None:
        return args.retrain_epochs
    if args.retrain_epochs is not None and args.retrain_epochs != old:
        raise ValueError(f"--epochs {old} and --retrain-epochs {args.retrain_epochs} disagree; "
                         "--epochs is the old name of --retrain-epochs")
    print("tnconv: --epochs is deprecated for the study, use --retrain-epochs", file=sys.stderr)
    return old


def _study_config(args: argparse.Namespace, profile_set: Any) -> Any:
    """The profile chosen by the flags with the other options applied."""
    from ..study.profiles import study_config

    names = ("dataset", "model", "train_epochs", "levels", "layers", "cuts", "batch_size",
             "threshold", "threads", "seed", "test_subset", "ray")
    return study_config(profile_set, full=args.full, quick=args.quick, tiny=args.tiny,
                        device=args.device or "auto", out=args.out,
                        retrain_epochs=_retrain_epochs(args),
                        progress=False if args.no_progress else None,
                        **{k: getattr(args, k) for k in names})


def _cmd_study(args: argparse.Namespace, profile_set: Any = None) -> int:
    """The whole study of one trained model: the spectra atlas of every conv layer over all
    cuts, single-layer and all-layers truncation sweeps over cuts and levels, retraining of
    the most aggressive truncation that lost accuracy, and a run folder with CSV/JSON
    tables, PNG plots and summary.md (tnconv.study.experiment.run_study). Rerunning with the
    same --out resumes the sweeps."""
    from ..runtime import resolve_device
    from ..study.experiment import run_study
    from ..study.profiles import PROFILE_SETS
    from .arguments import is_own_input, own_label, study_inputs

    given = study_inputs(args, resolve_device(args.device or "auto"))
    for key in ("model", "dataset"):  # your own model or data: named in the report only
        if given and getattr(args, key) is not None and is_own_input(getattr(args, key)):
            setattr(args, key, own_label(getattr(args, key)))
    cfg = _study_config(args, profile_set or PROFILE_SETS[args.profiles])
    print(f"summary: {run_study(cfg, **given)['out']}/summary.md")
    return 0


def study_main(argv: Sequence[str] | None = None, *, profiles: str = "resnet50",
               description: str | None = None) -> int:
    """The study's command line on its own, with one profile set (the example scripts).

    Parameters
    ----------
    argv
        The options (default ``sys.argv[1:]``); see ``tnconv study --help``.
    profiles
        The profile set: a name of :data:`tnconv.study.profiles.PROFILE_SETS`
        (``"resnet50"`` or ``"cnn4"``).
    description
        The ``--help`` description (the script's title).

    Returns
    -------
    int
        The exit status.

    Examples
    --------
    >>> study_main(["--tiny", "--out", "runs/tiny"], profiles="cnn4")  # doctest: +SKIP
    0
    """
    from ..study.profiles import PROFILE_SETS

    profile_set = PROFILE_SETS[profiles]
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="profiles (--full / --quick / --tiny):\n" + _profiles_help(profile_set))
    _add_study_options(parser)
    return _cmd_study(parser.parse_args(None if argv is None else list(argv)), profile_set)
