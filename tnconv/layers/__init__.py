"""Trainable tensorized convolutions and whole-model conversion.

=====================  ==============================================================
module                 contents
=====================  ==============================================================
``base.py``            the shared conv machinery: hyper-parameters, dense / factored paths
``mps.py``             :class:`MPSConv2d` (tensor-train cores from :func:`tnconv.to_mps`)
``tucker.py``          :class:`TuckerConv2d` (Tucker-2 on the channel legs, HOSVD)
``cp.py``              :class:`CPConv2d` (CP fitted by ALS in torch)
``convert.py``         :func:`tensorize` / :func:`densify` for whole models
``monitor.py``         bond entropies per epoch, re-compression between epochs
=====================  ==============================================================
"""

from __future__ import annotations

from .convert import LayerReport, TensorizeReport, densify, tensorize
from .cp import CPConv2d, cp_als
from .monitor import EntropyLog, bond_entropies, recompress
from .mps import MPSConv2d
from .tucker import TuckerConv2d, tucker2

__all__ = [
    "MPSConv2d",
    "TuckerConv2d",
    "CPConv2d",
    "tensorize",
    "densify",
    "TensorizeReport",
    "LayerReport",
    "tucker2",
    "cp_als",
    "bond_entropies",
    "recompress",
    "EntropyLog",
]
