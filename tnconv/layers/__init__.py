"""Trainable tensorized convolutions and linear layers, and whole-model conversion.

Only ``nn.Module`` classes and the functions that swap them into models live here; the
decompositions they are built from are in the core (:mod:`tnconv.mps`, :mod:`tnconv.tucker`,
:mod:`tnconv.cp`).

=====================  ==============================================================
module                 contents
=====================  ==============================================================
``base.py``            :class:`FactorizedConv2d`: hyper-parameters, the one ``from_conv``,
                       dense / factored forward paths, ``to_conv``
``mps_conv2d.py``      :class:`MPSConv2d` (tensor-train cores from :func:`tnconv.to_mps`)
``tucker_conv2d.py``   :class:`TuckerConv2d` (Tucker-2 from :func:`tnconv.tucker.to_tucker`)
``cp_conv2d.py``       :class:`CPConv2d` (CP from :func:`tnconv.cp.to_cp`, fitted by ALS)
``mpo_conv2d.py``      :class:`MPOConv2d` (matrix product operator from :func:`tnconv.to_mpo`)
``mpo_linear.py``      :class:`MPOLinear` (the same for ``nn.Linear``)
``mpo_paths.py``       the MPO layers' cost estimates: input x cores on a cotengra path, or
                       the weight rebuilt
``factor_shapes.py``   loading factors of other ranks (``load_state_dict``)
``convert.py``         :func:`tensorize` / :func:`densify` for whole models
``monitor.py``         bond entropies per epoch, re-compression between epochs
``balance.py``         balancing the norms of factors
=====================  ==============================================================

Examples
--------
>>> import torch
>>> from tnconv.layers import MPSConv2d
>>> layer = MPSConv2d.from_conv(torch.nn.Conv2d(8, 16, 3, padding=1), max_bond=4)
>>> layer(torch.randn(2, 8, 5, 5)).shape
torch.Size([2, 16, 5, 5])
"""

from __future__ import annotations

from ..cp import cp_als
from ..tucker import tucker2
from .base import FactorizedConv2d
from .convert import (
    LayerReport,
    TensorizeReport,
    densify,
    factorized_specs,
    refactorize,
    tensorize,
)
from .cp_conv2d import CPConv2d
from .monitor import EntropyLog, bond_entropies, recompress
from .mpo_conv2d import MPOConv2d
from .mpo_linear import MPOLinear
from .mps_conv2d import MPSConv2d
from .tucker_conv2d import TuckerConv2d

__all__ = [
    "FactorizedConv2d",
    "MPSConv2d",
    "TuckerConv2d",
    "CPConv2d",
    "MPOConv2d",
    "MPOLinear",
    "tensorize",
    "densify",
    "factorized_specs",
    "refactorize",
    "TensorizeReport",
    "LayerReport",
    "tucker2",
    "cp_als",
    "bond_entropies",
    "recompress",
    "EntropyLog",
]
