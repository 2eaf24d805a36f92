"""What every decomposed kernel shares: :class:`KernelFactors`.

A decomposition (:func:`tnconv.to_mps`, :func:`tnconv.to_tucker`, :func:`tnconv.to_cp`) returns
a kernel as factors with named indices; contracting them (one cached opt_einsum expression,
:mod:`tnconv.contraction`) gives the dense kernel back in the input's dtype and device. The
parameter count, compression ratio, measured relative error, ``summary()`` and ``repr`` are
written once here, as tensorly-torch keeps its factorized tensors apart from the layers that use
them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from .contraction import contract
from .decomp import frobenius_norm
from .legs import validate_kernel

__all__ = ["KernelFactors", "check_conv2d_kernel"]


def check_conv2d_kernel(kernel: object) -> torch.Tensor:
    """Validate a Conv2d weight: a finite floating-point 4-D tensor ``[out, in, kh, kw]``.

    Raises
    ------
    TypeError, ValueError
        As :func:`tnconv.legs.validate_kernel`, and for a kernel that is not 4-D.

    Examples
    --------
    >>> import torch
    >>> check_conv2d_kernel(torch.zeros(8, 3, 3, 3)).shape
    torch.Size([8, 3, 3, 3])
    """
    kernel = validate_kernel(kernel)
    if kernel.dim() != 4:
        raise ValueError(f"kernel must be a 4-D Conv2d weight [out, in, kh, kw], got shape "
                         f"{tuple(kernel.shape)}")
    return kernel


class KernelFactors:
    """A kernel as named factors, contracted back by opt_einsum (base of Tucker and CP).

    Attributes
    ----------
    factors : tuple of torch.Tensor
        The factors, in the kernel's dtype and device; axes named by :attr:`inds`.
    inds : tuple of tuple of str
        Index names of each factor (class attribute).
    legs : tuple of str
        The kernel's legs, the open indices of the contraction: ``("out", "in", "kh", "kw")``.
    shape : tuple of int
        The kernel's shape.
    rel_error : float
        ``||W - W_t||_F / ||W||_F``, measured against the decomposed kernel (in float64).
    error_bound : float or None
        The ``max_error`` asked for (an upper bound on :attr:`rel_error` unless another
        criterion cut deeper), None without it.
    """

    kind: ClassVar[str] = "factors"
    inds: ClassVar[tuple[tuple[str, ...], ...]] = ()
    legs: ClassVar[tuple[str, ...]] = ("out", "in", "kh", "kw")

    def __init__(self, factors: Sequence[torch.Tensor], kernel: torch.Tensor,
                 error_bound: float | None = None) -> None:
        self.factors: tuple[torch.Tensor, ...] = tuple(factors)
        self.shape: tuple[int, ...] = tuple(int(d) for d in kernel.shape)
        self.error_bound = error_bound
        with torch.no_grad():
            ref = kernel.detach().double()
            norm = frobenius_norm(ref)  # scaled: no overflow above ~1e154
            diff = frobenius_norm(self.to_kernel().double() - ref)
        self.rel_error: float = diff / norm if norm > 0 else diff

    @property
    def arrays(self) -> list[torch.Tensor]:
        """The factors as a list, matching :attr:`inds`."""
        return list(self.factors)

    @property
    def num_params(self) -> int:
        """Number of entries in all factors."""
        return sum(int(a.numel()) for a in self.arrays)

    @property
    def dense_params(self) -> int:
        """Number of kernel entries."""
        return math.prod(self.shape)

    @property
    def compression_ratio(self) -> float:
        """``dense_params / num_params``."""
        return self.dense_params / self.num_params

    def to_kernel(self) -> torch.Tensor:
        """Contract the factors to the dense kernel (the input's shape, dtype and device).

        One cached opt_einsum contraction, differentiable with respect to the factors.

        Examples
        --------
        >>> import torch, tnconv
        >>> tnconv.to_tucker(torch.randn(8, 4, 3, 3), ranks=2).to_kernel().shape
        torch.Size([8, 4, 3, 3])
        """
        return contract(self.arrays, self.inds, self.legs, shape=self.shape)

    def _ranks(self) -> dict[str, Any]:
        return {}

    def summary(self) -> dict[str, Any]:
        """Kind, shape, ranks, parameters, compression and errors as a flat dict.

        Examples
        --------
        >>> import torch, tnconv
        >>> tnconv.to_tucker(torch.randn(8, 4, 3, 3), ranks=2).summary()["ranks"]
        (2, 2)
        """
        return {"kind": self.kind, "shape": "x".join(map(str, self.shape)), **self._ranks(),
                "num_params": self.num_params, "dense_params": self.dense_params,
                "compression_ratio": self.compression_ratio, "rel_error": self.rel_error,
                "error_bound": self.error_bound}

    def __repr__(self) -> str:
        ranks = ", ".join(f"{k}={v}" for k, v in self._ranks().items())
        return (f"{type(self).__name__}(shape={self.shape}, {ranks}, "
                f"compression={self.compression_ratio:.2f}x, rel_error={self.rel_error:.3g})")
