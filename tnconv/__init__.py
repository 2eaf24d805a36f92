"""tnconv: quantum-inspired tensor networks for convolutional neural networks.

Data flows one way through the package, and the module layout follows it: each top-level module
or subpackage has a tier and imports nothing of a higher one, and no module is part of an
import cycle (docs/architecture.md gives the rules; tests/test_architecture.py checks them)::

    leaves       runtime.py, registry.py,   device / autocast / cache folder; named choices;
                   records.py, sizes.py,      result rows; params_fraction / compression_ratio;
                   _version.py                the version
    arrays       decomp.py, vbmf.py         the SVD / singular values, tails, Criteria; EVBMF
    labels       legs.py, cuts.py           leg names, sub-leg factoring, cut strings
                 network.py                 torch kernel -> labelled quimb network (kernel_tn)
                 spectra.py, truncation.py  spectra per cut; one-cut truncation (truncate)
                 factors.py, tucker.py,     KernelFactors; to_tucker -> KernelTucker,
                   cp.py                      to_cp -> KernelCP
                 mps/                       chains: to_mps -> KernelMPS, best_chain, rank
                                              allocation, ALS sweeps; to_mpo -> KernelMPO
                 hyper_contraction.py       cotengra paths for inputs x MPO cores, cached
                 contraction.py             cached opt_einsum contraction back to torch
                 model_layers.py, atlas.py  find / select / replace layers; spectra_atlas
    models       layers/                    nn.Modules only: MPSConv2d, TuckerConv2d, CPConv2d,
                                              MPOConv2d, MPOLinear, tensorize / densify
                 models.py, cifar_resnets.py, data/, train.py, checkpoints.py
    shared       pretrained.py, evaluation/ train_or_load; PrefixRunner and fingerprints
                 inference/                 for_inference: plain convolutions, BN folded
    experiments  study/                     truncate_model, sweeps, retraining, the study runner
                 compression/               compress: a model to a budget
                 export/                    export_onnx, export_program (torch.export)
    commands     cli/                       the ``tnconv`` command (``tnconv.cli:main``)

``import tnconv`` is cheap: the core needs only torch and opt_einsum (quimb is imported by the
functions that build networks), and the names of the layers, models, data, training and study
modules are resolved on first use, so torchvision and matplotlib load only when needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

# The core is imported eagerly (torch and opt_einsum only; quimb is imported on first use).
from .atlas import spectra_atlas
from .contraction import contract, contract_tn
from .cp import KernelCP, to_cp
from .cuts import all_cuts, default_chain, parse_cut
from .legs import factorize, kernel_legs
from .model_layers import conv_layers, replace_layer, select_layers
from .mps import ChainTable, KernelMPO, KernelMPS, best_chain, to_mpo, to_mps
from .network import kernel_tn
from .records import Records
from .spectra import NormCurve, entropy, norm_curve, rank_for_error, spectrum
from .truncation import CutSVD, TruncationReport, truncate
from .tucker import KernelTucker, to_tucker
from .vbmf import evbmf

# Lazily resolved names (they import torchvision, matplotlib, ...): name -> submodule.
_EXPORTS: dict[str, str] = {
    # trainable tensorized layers
    "MPSConv2d": "layers",
    "MPOConv2d": "layers",
    "MPOLinear": "layers",
    "TuckerConv2d": "layers",
    "CPConv2d": "layers",
    "tensorize": "layers",
    "densify": "layers",
    # models, data, training
    "cnn4": "models",
    "resnet50": "models",
    "resnet20": "cifar_resnets",
    "resnet32": "cifar_resnets",
    "resnet56": "cifar_resnets",
    "resnet110": "cifar_resnets",
    "get_model": "models",
    "load_dataset": "data",
    "fit": "train",
    "evaluate": "train",
    "save_checkpoint": "checkpoints",
    "load_checkpoint": "checkpoints",
    "train_or_load": "pretrained",
    # the study
    "truncate_model": "study",
    "sweep": "study",
    "retrain": "study",
    "spectra_atlas_many": "study",
    # compression to a budget
    "compress": "compression",
    "CompressReport": "compression",
    "save_compressed": "compression",
    "load_compressed": "compression",
    # deployment
    "for_inference": "inference",
    "InferenceReport": "inference",
    "export_onnx": "export",
    "export_program": "export",
    "ExportReport": "export",
}

__all__ = [
    "__version__",
    # core
    "Records",
    "conv_layers",
    "select_layers",
    "replace_layer",
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
    "KernelMPO",
    "to_mpo",
    "best_chain",
    "ChainTable",
    "KernelTucker",
    "to_tucker",
    "KernelCP",
    "to_cp",
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
    "MPOConv2d",
    "MPOLinear",
    "TuckerConv2d",
    "CPConv2d",
    "tensorize",
    "densify",
    "cnn4",
    "resnet50",
    "resnet20",
    "resnet32",
    "resnet56",
    "resnet110",
    "get_model",
    "load_dataset",
    "fit",
    "evaluate",
    "save_checkpoint",
    "load_checkpoint",
    "train_or_load",
    "truncate_model",
    "sweep",
    "retrain",
    "spectra_atlas_many",
    "compress",
    "evbmf",
    "CompressReport",
    "save_compressed",
    "load_compressed",
    "for_inference",
    "InferenceReport",
    "export_onnx",
    "export_program",
    "ExportReport",
]


#: Subpackages and modules reachable as attributes after a plain ``import tnconv``.
_SUBMODULES = ("layers", "study", "compression", "evaluation", "models", "data", "train",
               "checkpoints", "pretrained", "cli")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tnconv' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .checkpoints import load_checkpoint, save_checkpoint
    from .cifar_resnets import resnet20, resnet32, resnet56, resnet110
    from .compression import CompressReport, compress, load_compressed, save_compressed
    from .data import load_dataset
    from .export import ExportReport, export_onnx, export_program
    from .layers import (
        CPConv2d,
        MPOConv2d,
        MPOLinear,
        MPSConv2d,
        TuckerConv2d,
        densify,
        tensorize,
    )
    from .models import cnn4, get_model, resnet50
    from .pretrained import train_or_load
    from .study import retrain, spectra_atlas_many, sweep, truncate_model
    from .train import evaluate, fit
