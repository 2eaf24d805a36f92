"""Torch kernels as labelled quimb tensor networks.

:func:`kernel_tn` wraps a weight tensor in a one-tensor ``quimb.tensor.TensorNetwork`` whose
indices are the kernel's leg names (``out, in, kh, kw``; sub-legs ``out0, out1, ...`` when a
leg is split). The data stays the caller's torch tensor, on its device, with its autograd
graph: quimb only holds the labels and the network structure. Splitting and compressing the
network (:mod:`tnconv.mps`) and contracting it back (:mod:`tnconv.contraction`) happen in torch.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import torch

from .legs import (
    SplitSpec,
    kernel_legs,
    physical_legs,
    physical_shape,
    resolve_split,
    validate_kernel,
)
from .runtime import cache_dir

__all__ = ["kernel_tn", "KernelLayout", "layout", "compute_dtype", "import_quimb"]

_HALF = (torch.float16, torch.bfloat16)


def import_quimb() -> Any:
    """Import ``quimb.tensor`` on first use (keeps ``import tnconv`` fast).

    quimb compiles numba kernels on its first import and caches them in ``NUMBA_CACHE_DIR``;
    when that variable is unset, tnconv points it at ``$TNCONV_CACHE/numba`` (default
``~/.cache/tnconv/numba``, see :func:`tnconv.runtime.cache_dir`) so the cache
    lands in a writable folder.

    Examples
    --------
    >>> qtn = import_quimb()
    >>> qtn.Tensor.__name__
    'Tensor'
    """
    if "quimb.tensor" not in sys.modules and "NUMBA_CACHE_DIR" not in os.environ:
        os.environ["NUMBA_CACHE_DIR"] = str(cache_dir("numba"))
    import quimb.tensor as qtn

    return qtn


def compute_dtype(kernel: torch.Tensor, dtype: torch.dtype | None = None) -> torch.dtype:
    """The dtype linear algebra runs in: at least float32, float64 when asked.

    Half-precision kernels (float16, bfloat16) are computed in float32 and the results cast
    back to their own dtype.

    Examples
    --------
    >>> import torch
    >>> compute_dtype(torch.zeros(2, 2, dtype=torch.float16))
    torch.float32
    """
    if dtype is not None:
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        return dtype
    return torch.float32 if kernel.dtype in _HALF else kernel.dtype


@dataclass(frozen=True)
class KernelLayout:
    """Leg bookkeeping of one kernel: its legs, split and the physical (sub-)legs.

    Attributes
    ----------
    legs
        The kernel's legs in axis order, e.g. ``("out", "in", "kh", "kw")``.
    shape
        The kernel's shape.
    split
        ``{leg: sub-leg sizes}`` for split legs only.
    physical_legs
        Leg names after splitting, in axis order.
    physical_shape
        Shape after splitting.
    """

    legs: tuple[str, ...]
    shape: tuple[int, ...]
    split: dict[str, tuple[int, ...]]
    physical_legs: tuple[str, ...]
    physical_shape: tuple[int, ...]

    @property
    def sizes(self) -> dict[str, int]:
        """Size of every physical leg."""
        return dict(zip(self.physical_legs, self.physical_shape))


def layout(kernel: torch.Tensor, split: SplitSpec = None) -> KernelLayout:
    """Validate ``kernel`` and describe its legs (after an optional ``split``).

    Examples
    --------
    >>> import torch
    >>> layout(torch.zeros(64, 3, 3, 3), {"out": (4, 4, 4)}).physical_legs
    ('out0', 'out1', 'out2', 'in', 'kh', 'kw')
    """
    validate_kernel(kernel)
    legs = kernel_legs(kernel)
    shape = tuple(int(d) for d in kernel.shape)
    sp = resolve_split(shape, legs, split)
    return KernelLayout(legs, shape, sp, physical_legs(legs, sp), physical_shape(shape, legs, sp))


def kernel_tn(kernel: torch.Tensor, *, split: SplitSpec = None, tags: Any = ("KERNEL",)) -> Any:
    """A weight tensor as a quimb tensor network with labelled legs.

    Parameters
    ----------
    kernel
        A Linear, Conv1d, Conv2d or Conv3d weight (2 to 5 dimensions, floating point).
    split
        Factor legs into sub-legs: ``{"out": (4, 4, 4)}`` gives ``out0, out1, out2``
        (row-major, ``out0`` most significant); ``"binary"`` or ``"prime"`` factor every leg.
    tags
        Tags of the single tensor.

    Returns
    -------
    quimb.tensor.TensorNetwork
        One tensor whose data is ``kernel`` reshaped to the sub-leg sizes (a view: no copy,
        no trip through numpy; device, dtype and autograd graph are kept).

    Raises
    ------
    TypeError, ValueError
        Bad kernels (see :func:`tnconv.legs.validate_kernel`) or a bad ``split``.

    Examples
    --------
    >>> import torch, tnconv
    >>> tn = tnconv.kernel_tn(torch.randn(64, 16, 3, 3), split={"out": (4, 4, 4)})
    >>> tn.tensors[0].inds
    ('out0', 'out1', 'out2', 'in', 'kh', 'kw')
    """
    qtn = import_quimb()
    lay = layout(kernel, split)
    data = kernel.reshape(lay.physical_shape)
    return qtn.TensorNetwork([qtn.Tensor(data, inds=lay.physical_legs, tags=tags)])
