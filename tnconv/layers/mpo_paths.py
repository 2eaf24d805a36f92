"""What the MPO layers share: the cost estimates of their two forward paths.

An MPO layer (:class:`tnconv.layers.MPOLinear`, :class:`tnconv.layers.MPOConv2d`) runs either

* the **dense** path: rebuild the weight from the cores (one cached opt_einsum contraction,
  :func:`tnconv.contraction.contract`), then one ``F.linear`` / ``F.conv2d``; or
* the **factored** path: contract the input ``[B, in0, .., in{n-1}, ...]`` with the cores
  directly, in the order cotengra found for that shape (:mod:`tnconv.hyper_contraction`);
  the dense weight is never built.

With ``path="auto"`` a layer takes, per input shape, the path with the smaller
:attr:`PathEstimate.score`: multiply-adds (those of the pairwise einsum steps counted
:data:`EINSUM_COST` times) plus :data:`MEMORY_WEIGHT` per element written. Elements written
(every intermediate and the output) are what the backward pass keeps, and the carrying of the
batch through the bonds is what makes TT layers known for their activation memory; counting
them keeps ``"auto"`` off a contraction that saves FLOPs but writes far more. The estimates of
both paths are in the layer's ``estimate(input_shape)``.

The two constants were read off ``benchmarks/bench_mpo.py`` (forward + backward, batch 64,
one CPU thread): a 4096 x 4096 MPO at 50x fewer parameters whose contraction needs 12 % fewer
multiply-adds and 19 % fewer writes than rebuilding the weight ran 1.4x slower than
``F.linear`` of the rebuilt weight, and a 256 -> 256 3x3 MPO convolution with 56 % fewer
multiply-adds but 17x the writes ran 4x slower than ``F.conv2d``: with these constants the
estimate picks the faster path in all four settings measured there. At small batches the
contraction wins by far (the weight is never built).

Examples
--------
>>> est = rebuild_estimate([(8, 4, 2), (2, 8, 4)], [("o0", "i0", "b"), ("b", "o1", "i1")],
...                        ("o0", "o1", "i0", "i1"))
>>> est.flops, est.writes
(2048, 1024)
>>> (est + PathEstimate(10, 5, 5)).flops
2058
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..contraction import contraction_cost
from ..hyper_contraction import hyper_path

__all__ = ["adopt_mpo", "EINSUM_COST", "MEMORY_WEIGHT", "PathEstimate", "channel_estimate",
           "rebuild_estimate"]

#: Multiply-adds one element written is worth in :attr:`PathEstimate.score` (cotengra's own
#: ``"combo"`` score uses the same factor).
MEMORY_WEIGHT: int = 64

#: What a multiply-add of a pairwise einsum step (batched matmuls between permuted copies)
#: costs against one of a single GEMM or convolution, in :attr:`PathEstimate.score`.
EINSUM_COST: float = 1.5


@dataclass(frozen=True)
class PathEstimate:
    """Cost of one forward path for one input shape.

    Attributes
    ----------
    flops
        Multiply-adds.
    peak
        Largest number of elements alive at once beyond the input (cotengra's peak of the
        contraction, or the weight and the output of the dense path).
    writes
        Elements written: intermediates, the rebuilt weight and the output.
    einsum_flops
        The part of ``flops`` run as pairwise einsum steps (the input contraction).
    """

    flops: int
    peak: int
    writes: int
    einsum_flops: int = 0

    @property
    def score(self) -> float:
        """``flops + (EINSUM_COST - 1) * einsum_flops + MEMORY_WEIGHT * writes``: what
        ``path="auto"`` compares."""
        return self.flops + (EINSUM_COST - 1) * self.einsum_flops + MEMORY_WEIGHT * self.writes

    def __add__(self, other: PathEstimate) -> PathEstimate:
        return PathEstimate(self.flops + other.flops, max(self.peak, other.peak),
                            self.writes + other.writes, self.einsum_flops + other.einsum_flops)

    def as_dict(self) -> dict[str, float]:
        """``flops``, ``peak``, ``writes``, ``einsum_flops`` and ``score``."""
        return {"flops": self.flops, "peak": self.peak, "writes": self.writes,
                "einsum_flops": self.einsum_flops, "score": self.score}


def _key(inds: Sequence[Sequence[str]], shapes: Sequence[Sequence[int]]
         ) -> tuple[tuple[tuple[str, ...], ...], tuple[tuple[int, ...], ...]]:
    """Hashable index names and shapes (list comprehensions: torch.compile traces them)."""
    return (tuple([tuple(ix) for ix in inds]),
            tuple([tuple([int(d) for d in shp]) for shp in shapes]))


@torch.compiler.assume_constant_result
def _rebuild_costs(inds: tuple[tuple[str, ...], ...], shapes: tuple[tuple[int, ...], ...],
                   output_inds: tuple[str, ...]) -> tuple[int, int]:
    size = {i: d for ix, shp in zip(inds, shapes, strict=True) for i, d in zip(ix, shp,
                                                                                strict=True)}
    return int(contraction_cost(inds, shapes, output_inds)), math.prod(size[i]
                                                                        for i in output_inds)


@torch.compiler.assume_constant_result
def _channel_costs(inds: tuple[tuple[str, ...], ...], shapes: tuple[tuple[int, ...], ...],
                   output_inds: tuple[str, ...]) -> tuple[int, int, int]:
    found = hyper_path(inds, shapes, output_inds)
    return found.flops, max(0, found.peak - math.prod(shapes[0])), found.writes


def adopt_mpo(layer: nn.Module, mpo: Any) -> None:
    """Give ``layer`` (an MPO layer) the cores of ``mpo`` (a :class:`tnconv.KernelMPO`) as
    parameters, with their index names, sub-leg shapes and the weight its bond spectra come
    from (computed on first access, then released): what both MPO layers hold.

    Examples
    --------
    >>> import torch, tnconv
    >>> layer = torch.nn.Module()
    >>> adopt_mpo(layer, tnconv.to_mpo(torch.randn(8, 8), max_bond=2))
    >>> len(layer.cores), layer.in_shape
    (2, (4, 2))
    """
    layer.cores = nn.ParameterList(
        [nn.Parameter(c.detach().to(mpo.out_dtype).contiguous().clone()) for c in mpo.cores])
    layer.inds = list(mpo.inds)
    layer.in_shape = tuple(mpo.in_shape)
    layer.out_shape = tuple(mpo.out_shape)
    layer.physical_legs = tuple(mpo.physical_legs)
    layer._spectra_chain = mpo.mps.chain
    layer._spectra = None
    layer._plans = {}


def rebuild_estimate(shapes: Sequence[Sequence[int]], inds: Sequence[Sequence[str]],
                     output_inds: Sequence[str]) -> PathEstimate:
    """Rebuilding the weight from the cores: opt_einsum's multiply-adds, the weight written.

    Examples
    --------
    >>> rebuild_estimate([(4, 2), (2, 4)], [("i", "b"), ("b", "j")], ("i", "j")).writes
    16
    """
    ix, shp = _key(inds, shapes)
    flops, weight = _rebuild_costs(ix, shp, tuple(output_inds))
    return PathEstimate(flops, weight, weight)


def channel_estimate(inds: Sequence[Sequence[str]], shapes: Sequence[Sequence[int]],
                     output_inds: Sequence[str]) -> PathEstimate:
    """The input contracted with the cores on its cotengra path
    (:func:`tnconv.hyper_contraction.hyper_path`): multiply-adds, peak beyond the input (the
    first tensor), elements written.

    Examples
    --------
    >>> est = channel_estimate([("n", "i"), ("i", "j")], [(5, 4), (4, 3)], ("n", "j"))
    >>> est.flops, est.writes, est.einsum_flops
    (60, 15, 60)
    """
    ix, shp = _key(inds, shapes)
    flops, peak, writes = _channel_costs(ix, shp, tuple(output_inds))
    return PathEstimate(flops, peak, writes, flops)
