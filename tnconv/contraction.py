"""Contraction of labelled networks back to torch tensors, through opt_einsum.

Every contraction here is an einsum over named indices. The equation and the contraction
path depend only on the network's *structure* (index names and shapes), so one
:func:`opt_einsum.contract_expression` is built per structure, cached, and reused: a trainable
layer that rebuilds its kernel every forward pass pays for path finding once.

The arrays are torch tensors on any device. The cached expression's pairwise steps are run
as ``torch.einsum`` calls, so the result stays on the arrays' device with autograd intact, and
``torch.compile`` traces a contraction without a graph break: the steps (and the FLOP count of
:func:`contraction_cost`) are computed by functions that ``torch.compiler`` treats as constant
for a given structure (``torch.compiler.assume_constant_result``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import opt_einsum
import torch

__all__ = ["contract", "contract_tn", "contraction_expression", "contraction_cost", "cache_info",
           "check_arrays", "run_steps"]


def _equation(
    inds: Sequence[Sequence[str]], output_inds: Sequence[str]
) -> tuple[str, dict[str, str]]:
    symbols: dict[str, str] = {}
    for group in (*inds, output_inds):
        for ix in group:
            if ix not in symbols:
                symbols[ix] = opt_einsum.get_symbol(len(symbols))
    lhs = ",".join("".join(symbols[ix] for ix in group) for group in inds)
    rhs = "".join(symbols[ix] for ix in output_inds)
    return f"{lhs}->{rhs}", symbols


def _check_network(inds: Sequence[Sequence[str]], shapes: Sequence[Sequence[int]],
                   output_inds: Sequence[str]) -> None:
    """Errors in the leg names of the network (not in einsum letters, as opt_einsum gives)."""
    sizes: dict[str, tuple[int, int]] = {}
    for k, (ix, shp) in enumerate(zip(inds, shapes)):
        if len(ix) != len(shp):
            raise ValueError(f"indices {tuple(ix)} do not match shape {tuple(shp)} (array {k})")
        for i, d in zip(ix, shp):
            j, size = sizes.setdefault(i, (k, int(d)))
            if size != int(d):
                raise ValueError(f"index {i!r} has size {size} in array {j} but {int(d)} in "
                                 f"array {k}; a shared index must have one size")
    for i in output_inds:
        if i not in sizes:
            raise ValueError(f"output index {i!r} is on no array; the indices are "
                             f"{', '.join(map(repr, sizes))}")
    dupes = sorted({i for i in output_inds if list(output_inds).count(i) > 1})
    if dupes:
        raise ValueError(f"output index {dupes[0]!r} appears more than once in output_inds")


@lru_cache(maxsize=512)
def _cached_expression(eq: str, shapes: tuple[tuple[int, ...], ...], optimize: str) -> Any:
    return opt_einsum.contract_expression(eq, *shapes, optimize=optimize)


def contraction_expression(
    inds: Sequence[Sequence[str]],
    shapes: Sequence[Sequence[int]],
    output_inds: Sequence[str],
    *,
    optimize: str = "auto",
) -> Any:
    """The cached opt_einsum expression for a network structure.

    Parameters
    ----------
    inds
        Index names of each tensor.
    shapes
        Shape of each tensor.
    output_inds
        Index names of the result, in order.
    optimize
        opt_einsum path optimiser.

    Returns
    -------
    opt_einsum.contract.ContractExpression
        Call it as ``expr(*arrays, backend="torch")``.

    Examples
    --------
    >>> expr = contraction_expression([("a", "b"), ("b", "c")], [(2, 3), (3, 4)], ("a", "c"))
    >>> expr.contraction_list[0][2]
    'bc,ab->ac'
    """
    if len(inds) != len(shapes):
        raise ValueError(f"got {len(inds)} index tuples but {len(shapes)} shapes")
    _check_network(inds, shapes, output_inds)
    eq, _ = _equation(inds, output_inds)
    key = tuple(tuple(int(d) for d in s) for s in shapes)
    return _cached_expression(eq, key, optimize)


_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ,->")


@torch.compiler.assume_constant_result
def _steps(inds: tuple[tuple[str, ...], ...], shapes: tuple[tuple[int, ...], ...],
           output_inds: tuple[str, ...]) -> tuple[tuple[tuple[int, ...], str], ...]:
    """The pairwise steps of the cached expression: ``(positions popped, einsum string)``."""
    expr = contraction_expression(inds, shapes, output_inds)
    return tuple((tuple(step[0]), step[2]) for step in expr.contraction_list)


@torch.compiler.assume_constant_result
def contraction_cost(inds: Sequence[Sequence[str]], shapes: Sequence[Sequence[int]],
                     output_inds: Sequence[str]) -> int:
    """Multiply-adds of the cached contraction of a network structure (opt_einsum's estimate).

    Examples
    --------
    >>> contraction_cost([("a", "b"), ("b", "c")], [(2, 3), (3, 4)], ("a", "c"))
    24
    """
    _check_network(inds, shapes, output_inds)
    return _cost(_equation(inds, output_inds)[0], tuple(tuple(int(d) for d in s) for s in shapes))


@lru_cache(maxsize=512)
def _cost(eq: str, shapes: tuple[tuple[int, ...], ...]) -> int:
    return int(opt_einsum.contract_path(eq, *shapes, shapes=True)[1].opt_cost) // 2


def check_arrays(arrays: Sequence[Any], inds: Sequence[Sequence[str]]
                 ) -> tuple[tuple[int, ...], ...]:
    """The shapes of ``arrays``; errors when they are not torch tensors or do not match ``inds``.

    Examples
    --------
    >>> check_arrays([torch.ones(2, 3)], [("a", "b")])
    ((2, 3),)
    """
    if len(arrays) != len(inds):
        raise ValueError(f"got {len(arrays)} arrays but {len(inds)} index tuples")
    if not all(isinstance(a, torch.Tensor) for a in arrays):
        bad = next(type(a).__name__ for a in arrays if not isinstance(a, torch.Tensor))
        raise TypeError(f"arrays must be torch tensors, got a {bad}")
    return tuple(tuple(int(d) for d in a.shape) for a in arrays)


def run_steps(arrays: Sequence[torch.Tensor],
              steps: Sequence[tuple[Sequence[int], str]]) -> torch.Tensor:
    """Run pairwise contraction steps ``(positions popped, einsum string)`` with torch.einsum.

    The operands at ``positions`` (in that order) are popped and their einsum appended, as
    opt_einsum's contraction lists do; the last operand left is the result.

    Examples
    --------
    >>> a, b = torch.ones(2, 3), torch.ones(3, 4)
    >>> run_steps([a, b], [((1, 0), "bc,ab->ac")]).shape
    torch.Size([2, 4])
    """
    ops = list(arrays)
    for positions, eq in steps:
        ops.append(torch.einsum(eq, *[ops.pop(k) for k in positions]))
    return ops[0]


def contract(
    arrays: Sequence[torch.Tensor],
    inds: Sequence[Sequence[str]],
    output_inds: Sequence[str],
    *,
    shape: Sequence[int] | None = None,
    optimize: str = "auto",
) -> torch.Tensor:
    """Contract torch tensors with named indices, reusing a cached expression.

    Parameters
    ----------
    arrays
        The tensors (same device and dtype).
    inds
        Index names of each tensor; a name shared by two tensors is summed over.
    output_inds
        Index names kept in the result, in this order.
    shape
        If given, the result is reshaped to it (to fuse sub-legs back into legs).
    optimize
        opt_einsum path optimiser.

    Returns
    -------
    torch.Tensor
        On the arrays' device; differentiable.

    Examples
    --------
    >>> import torch
    >>> a, b = torch.ones(2, 3), torch.ones(3, 4)
    >>> contract([a, b], [("i", "k"), ("k", "j")], ("i", "j")).shape
    torch.Size([2, 4])
    """
    key = check_arrays(arrays, inds)
    ix = tuple(tuple(i) for i in inds)
    steps = _steps(ix, key, tuple(output_inds)) if optimize == "auto" else None
    if steps is None or any(c not in _LETTERS for _, eq in steps for c in eq):
        expr = contraction_expression(inds, key, output_inds, optimize=optimize)
        out = expr(*arrays, backend="torch")
    else:
        out = run_steps(arrays, steps)
    if shape is None:
        return out
    if math.prod(shape) != out.numel():
        raise ValueError(f"shape {tuple(shape)} does not hold the {out.numel()} entries of the "
                         f"result {tuple(out.shape)} over {tuple(output_inds)}")
    return out.reshape(tuple(shape))


def contract_tn(
    tn: Any, output_inds: Sequence[str], *, shape: Sequence[int] | None = None
) -> torch.Tensor:
    """Contract a quimb tensor network whose data are torch tensors.

    Parameters
    ----------
    tn
        A ``quimb.tensor.TensorNetwork`` (or a single ``Tensor``).
    output_inds
        Open indices of the result, in order.
    shape
        Optional final shape (fuses sub-legs).

    Returns
    -------
    torch.Tensor

    Examples
    --------
    >>> import torch, tnconv
    >>> tn = tnconv.kernel_tn(torch.ones(4, 3, 3, 3))
    >>> contract_tn(tn, ("out", "in", "kh", "kw")).shape
    torch.Size([4, 3, 3, 3])
    """
    tensors = list(tn.tensors) if hasattr(tn, "tensors") else [tn]
    return contract([t.data for t in tensors], [t.inds for t in tensors], output_inds,
                    shape=shape)


def cache_info() -> Any:
    """Hits and misses of the expression cache (``functools.lru_cache`` statistics).

    Examples
    --------
    >>> cache_info().maxsize
    512
    """
    return _cached_expression.cache_info()
