"""tnconv: quantum-inspired tensor networks for convolutional neural networks.

Data flows one way through the package, and the module layout follows it::

    legs.py, cuts.py      leg names, sub-leg factoring, cut strings ("out,kh|in,kw")
    network.py            torch kernel -> labelled quimb network (kernel_tn)
    spectra.py            singular values, entropies, ranks per cut
    truncate.py           truncation along one bipartition (Eckart-Young)
    mps.py                MPS / tensor-train chains (to_mps)
    contract.py           cached opt_einsum contraction back to torch
    atlas.py              conv_layers, spectra_atlas over whole models
    layers/               trainable MPS / Tucker / CP convolutions, tensorize / densify
    models.py, data.py    the study's models and datasets
    train.py              fit, evaluate, checkpoints
    study/                model-wide truncation, sweeps, retraining, plots, reports
    cli.py                the ``tnconv`` command

``import tnconv`` is cheap: the core needs only torch and opt_einsum (quimb is imported by the
functions that build networks), and the names of the layers, models, data, training and study
modules are resolved on first use, so torchvision and matplotlib load only when needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The core is imported eagerly (torch and opt_einsum only; quimb is imported on first use).
# This also binds the functions `truncate` and `contract` over their same-named submodules.
from .atlas import Records, conv_layers, spectra_atlas
from .contract import contract, contract_tn
from .cuts import all_cuts, default_chain, parse_cut
from .legs import factorize, kernel_legs
from .mps import KernelMPS, to_mps
from .network import kernel_tn
from .spectra import NormCurve, entropy, norm_curve, rank_for_error, spectrum
from .truncate import CutSVD, TruncationReport, truncate

# Lazily resolved names (they import torchvision, matplotlib, ...): name -> submodule.
_EXPORTS: dict[str, str] = {
    # trainable tensorized layers
    "MPSConv2d": "layers",
    "TuckerConv2d": "layers",
    "CPConv2d": "layers",
    "tensorize": "layers",
    "densify": "layers",
    # models, data, training
    "cnn4": "models",
    "resnet50": "models",
    "get_model": "models",
    "load_dataset": "data",
    "fit": "train",
    "evaluate": "train",
    "save_checkpoint": "train",
    "load_checkpoint": "train",
    # the study
    "truncate_model": "study",
    "sweep": "study",
    "retrain": "study",
}

__all__ = [
    "__version__",
    # core
    "Records",
    "conv_layers",
    "spectra_atlas",
    "contract",
    "contract_tn",
    "all_cuts",
    "default_chain",
    "parse_cut",
    "factorize",
    "kernel_legs",
    "KernelMPS",
    "to_mps",
    "kernel_tn",
    "NormCurve",
    "entropy",
    "norm_curve",
    "rank_for_error",
    "spectrum",
    "CutSVD",
    "TruncationReport",
    "truncate",
    # resolved lazily
    "MPSConv2d",
    "TuckerConv2d",
    "CPConv2d",
    "tensorize",
    "densify",
    "cnn4",
    "resnet50",
    "get_model",
    "load_dataset",
    "fit",
    "evaluate",
    "save_checkpoint",
    "load_checkpoint",
    "truncate_model",
    "sweep",
    "retrain",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tnconv' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .data import load_dataset
    from .layers import CPConv2d, MPSConv2d, TuckerConv2d, densify, tensorize
    from .models import cnn4, get_model, resnet50
    from .study import retrain, sweep, truncate_model
    from .train import evaluate, fit, load_checkpoint, save_checkpoint
