"""Leg names of weight tensors and the factoring of legs into sub-legs.

A weight tensor of a torch layer gets one *leg* (a named index) per axis:

=========  =============================  ===========================
weight     torch layout                   legs
=========  =============================  ===========================
Linear     ``[out, in]``                  ``out, in``
Conv1d     ``[out, in, k]``               ``out, in, k``
Conv2d     ``[out, in, kh, kw]``          ``out, in, kh, kw``
Conv3d     ``[out, in, kd, kh, kw]``      ``out, in, kd, kh, kw``
=========  =============================  ===========================

A leg may be *split* into sub-legs (``out=64 -> out0, out1, out2`` of sizes 4, 4, 4). The
factoring is row-major: ``out0`` is the most significant digit, so
``out = (out0 * d1 + out1) * d2 + out2``, exactly as ``tensor.reshape`` does it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

__all__ = [
    "LEGS_BY_NDIM",
    "SplitSpec",
    "kernel_legs",
    "balanced_factors",
    "factorize",
    "resolve_split",
    "physical_legs",
    "physical_shape",
    "validate_kernel",
]

#: Leg names by the number of dimensions of the weight tensor.
LEGS_BY_NDIM: dict[int, tuple[str, ...]] = {
    2: ("out", "in"),
    3: ("out", "in", "k"),
    4: ("out", "in", "kh", "kw"),
    5: ("out", "in", "kd", "kh", "kw"),
}

#: What ``split=`` accepts: ``None``, ``"binary"``, ``"prime"`` or ``{leg: sizes}``.
SplitSpec = None | str | Mapping[str, Sequence[int]]

_SPLIT_MODES = ("binary", "prime")


def validate_kernel(kernel: object, *, name: str = "kernel") -> torch.Tensor:
    """Check that ``kernel`` is a finite floating-point weight tensor of 2 to 5 dimensions.

    Parameters
    ----------
    kernel
        The object to check.
    name
        How the object is called in error messages.

    Returns
    -------
    torch.Tensor
        ``kernel`` itself (never a copy).

    Raises
    ------
    TypeError
        Not a ``torch.Tensor``, or not of a floating-point dtype.
    ValueError
        Wrong number of dimensions, a zero-sized axis, or NaN/Inf entries.

    Examples
    --------
    >>> import torch
    >>> validate_kernel(torch.randn(8, 3, 3, 3)).shape
    torch.Size([8, 3, 3, 3])
    """
    if not isinstance(kernel, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(kernel).__name__}")
    if not (kernel.is_floating_point() or kernel.is_complex()):
        raise TypeError(
            f"{name} must have a floating-point dtype, got {kernel.dtype} "
            "(convert with kernel.float())"
        )
    if kernel.is_complex():
        raise TypeError(f"{name} must be real, got {kernel.dtype}")
    if kernel.ndim not in LEGS_BY_NDIM:
        raise ValueError(
            f"{name} must have 2 (Linear), 3 (Conv1d), 4 (Conv2d) or 5 (Conv3d) dimensions, "
            f"got shape {tuple(kernel.shape)}"
        )
    if kernel.numel() == 0:
        raise ValueError(f"{name} has a zero-sized axis: shape {tuple(kernel.shape)}")
    if kernel.is_meta:
        raise ValueError(f"{name} is on the meta device (shape only, no values); materialise "
                         "it first, e.g. with module.to_empty(device='cpu') and an init")
    with torch.no_grad():
        if not bool(torch.isfinite(kernel).all()):
            raise ValueError(f"{name} contains NaN or Inf entries")
    return kernel


def kernel_legs(kernel: torch.Tensor | int) -> tuple[str, ...]:
    """Leg names of a weight tensor, in its axis order.

    Parameters
    ----------
    kernel
        A weight tensor, or its number of dimensions.

    Returns
    -------
    tuple of str
        For example ``("out", "in", "kh", "kw")`` for a Conv2d kernel.

    Examples
    --------
    >>> kernel_legs(4)
    ('out', 'in', 'kh', 'kw')
    """
    ndim = kernel if isinstance(kernel, int) else getattr(kernel, "ndim", None)
    if ndim not in LEGS_BY_NDIM:
        raise ValueError(f"no leg names for a weight of {ndim} dimensions; valid: 2, 3, 4, 5")
    return LEGS_BY_NDIM[ndim]


def _prime_factors(n: int) -> list[int]:
    factors, p = [], 2
    while p * p <= n:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    if n > 1:
        factors.append(n)
    return factors


def factorize(n: int, mode: str = "binary") -> tuple[int, ...]:
    """Factor a leg size into sub-leg sizes.

    Parameters
    ----------
    n
        The leg size (>= 1).
    mode
        ``"binary"``: as many factors of 2 as divide ``n``, then the odd rest (if > 1) last.
        ``"prime"``: the prime factors in ascending order.

    Returns
    -------
    tuple of int
        Factors whose product is ``n``; ``(n,)`` when ``n`` cannot be factored.

    Examples
    --------
    >>> factorize(48, "binary")
    (2, 2, 2, 2, 3)
    >>> factorize(12, "prime")
    (2, 2, 3)
    """
    if mode not in _SPLIT_MODES:
        raise ValueError(f"unknown split mode {mode!r}; valid: {', '.join(_SPLIT_MODES)}")
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int (a leg size), got {n!r}")
    if n < 1:
        raise ValueError(f"n (the leg size) must be >= 1, got {n}")
    if mode == "prime":
        factors = _prime_factors(n)
    else:
        factors = []
        while n % 2 == 0 and n > 1:
            factors.append(2)
            n //= 2
        if n > 1:
            factors.append(n)
    return tuple(factors) or (1,)


def balanced_factors(n: int, parts: int) -> tuple[int, ...]:
    """Factor a leg size into ``parts`` sub-leg sizes as equal as possible (descending).

    The prime factors, largest first, each go to the part with the smallest product so far
    (padded with 1 where ``n`` has fewer prime factors than ``parts``): the automatic
    ``in_shape`` / ``out_shape`` of :func:`tnconv.to_mpo`.

    Parameters
    ----------
    n
        The leg size (>= 1).
    parts
        The number of sub-legs (>= 1).

    Returns
    -------
    tuple of int
        ``parts`` sizes whose product is ``n``, largest first.

    Examples
    --------
    >>> balanced_factors(4096, 3), balanced_factors(256, 3), balanced_factors(3, 2)
    ((16, 16, 16), (8, 8, 4), (3, 1))
    """
    for name, value in (("n", n), ("parts", parts)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int >= 1, got {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    bins = [1] * parts
    for p in sorted(_prime_factors(n), reverse=True):
        k = min(range(parts), key=bins.__getitem__)
        bins[k] *= p
    return tuple(sorted(bins, reverse=True))


def _is_int(x: object) -> bool:
    return hasattr(x, "__index__") and not isinstance(x, (bool, torch.Tensor))


def _split_sizes(leg: str, factors: object) -> tuple[int, ...]:
    """The sub-leg sizes of one leg of a ``split=`` mapping: ints only, no coercion."""
    if _is_int(factors):
        return (int(factors),)  # type: ignore[call-overload]
    if (isinstance(factors, (str, bytes)) or not isinstance(factors, Sequence)
            or not all(_is_int(f) for f in factors)):
        raise TypeError(f"split sizes of leg {leg!r} must be ints, e.g. (4, 4), got {factors!r}")
    return tuple(int(f) for f in factors)


def resolve_split(
    shape: Sequence[int], legs: Sequence[str], split: SplitSpec
) -> dict[str, tuple[int, ...]]:
    """Turn a ``split=`` argument into ``{leg: sub-leg sizes}`` for the legs actually split.

    Legs factored into a single size are left whole and do not appear in the result.

    Parameters
    ----------
    shape
        The weight's shape.
    legs
        Its leg names (same order).
    split
        ``None``, ``"binary"``, ``"prime"`` or a mapping ``{leg: sizes}``.

    Returns
    -------
    dict
        Only the legs with two or more sub-legs.

    Raises
    ------
    ValueError
        Unknown leg, unknown mode, non-positive size, or sizes whose product is not the leg size.

    Examples
    --------
    >>> resolve_split((64, 3, 3, 3), ("out", "in", "kh", "kw"), {"out": (4, 4, 4)})
    {'out': (4, 4, 4)}
    """
    sizes = dict(zip(legs, (int(d) for d in shape)))
    if split is None:
        return {}
    if isinstance(split, str):
        if split not in _SPLIT_MODES:
            raise ValueError(
                f"unknown split {split!r}; valid: None, 'binary', 'prime' or a mapping "
                "{leg: sizes}"
            )
        out = {leg: factorize(size, split) for leg, size in sizes.items()}
        return {leg: f for leg, f in out.items() if len(f) > 1}
    if not isinstance(split, Mapping):
        raise TypeError(
            f"split must be None, 'binary', 'prime' or a mapping {{leg: sizes}}, "
            f"got {type(split).__name__}"
        )
    out = {}
    for leg, factors in split.items():
        if leg not in sizes:
            raise ValueError(f"split names unknown leg {leg!r}; valid legs: {', '.join(legs)}")
        factors = _split_sizes(leg, factors)
        if not factors or any(f < 1 for f in factors):
            raise ValueError(f"split sizes of leg {leg!r} must be positive, got {factors}")
        prod = 1
        for f in factors:
            prod *= f
        if prod != sizes[leg]:
            raise ValueError(
                f"split of leg {leg!r} into {factors} has product {prod}, "
                f"but the leg has size {sizes[leg]}"
            )
        factors = tuple(f for f in factors if f > 1) or (1,)
        if len(factors) > 1:
            out[leg] = factors
    return out


def physical_legs(legs: Sequence[str], split: Mapping[str, Sequence[int]]) -> tuple[str, ...]:
    """The leg names after splitting: ``out`` split in three becomes ``out0, out1, out2``.

    Examples
    --------
    >>> physical_legs(("out", "in"), {"out": (2, 2)})
    ('out0', 'out1', 'in')
    """
    names: list[str] = []
    for leg in legs:
        if leg in split:
            names.extend(f"{leg}{i}" for i in range(len(split[leg])))
        else:
            names.append(leg)
    return tuple(names)


def physical_shape(
    shape: Sequence[int], legs: Sequence[str], split: Mapping[str, Sequence[int]]
) -> tuple[int, ...]:
    """The shape after splitting, matching :func:`physical_legs`.

    Examples
    --------
    >>> physical_shape((4, 3), ("out", "in"), {"out": (2, 2)})
    (2, 2, 3)
    """
    dims: list[int] = []
    for leg, d in zip(legs, shape):
        dims.extend(split[leg] if leg in split else (int(d),))
    return tuple(dims)
