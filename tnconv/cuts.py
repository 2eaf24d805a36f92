"""Cuts: groupings of a kernel's legs into sites.

A cut string lists groups of legs separated by ``|``; legs inside a group are separated by
commas:

* ``"out,kh|in,kw"`` -- a *bipartition*: the kernel reshaped to a matrix with rows
  ``(out, kh)`` and columns ``(in, kw)``;
* ``"out|kh|kw|in"`` -- a *chain* of four sites joined by three bonds (an MPS / tensor train);
* ``"out,kh|kw|in"`` -- a chain whose first site holds two legs.

Every leg appears exactly once. When a leg has been split into sub-legs (see
:mod:`tnconv.legs`), a group may name the sub-legs (``out0``) or the parent leg (``out``),
which stands for all of its sub-legs inside that group. A cut may also be given as a sequence
of groups, e.g. ``[("out", "kh"), ("in", "kw")]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import torch

from .legs import kernel_legs, physical_legs

__all__ = ["CutSpec", "parse_cut", "format_cut", "all_cuts", "default_chain"]

#: What ``cut=`` accepts: a string such as ``"out,kh|in,kw"`` or a sequence of groups.
CutSpec = str | Sequence[Sequence[str]]


def format_cut(groups: Sequence[Sequence[str]]) -> str:
    """Write groups of legs as a cut string.

    Examples
    --------
    >>> format_cut([("out", "kh"), ("in", "kw")])
    'out,kh|in,kw'
    """
    return "|".join(",".join(g) for g in groups)


def _expand_names(
    group: Sequence[str], valid: Sequence[str], split: Mapping[str, Sequence[int]]
) -> list[str]:
    names: list[str] = []
    for name in group:
        if name in split:
            names.extend(f"{name}{i}" for i in range(len(split[name])))
        elif name in valid:
            names.append(name)
        else:
            extra = f" (or the split parents {', '.join(split)})" if split else ""
            raise ValueError(f"unknown leg {name!r} in cut; valid legs: {', '.join(valid)}{extra}")
    return names


def parse_cut(
    cut: CutSpec,
    legs: Sequence[str],
    split: Mapping[str, Sequence[int]] | None = None,
    *,
    min_groups: int = 2,
    max_groups: int | None = None,
) -> tuple[tuple[str, ...], ...]:
    """Parse and validate a cut against a kernel's legs.

    Parameters
    ----------
    cut
        A cut string (``"out,kh|in,kw"``) or a sequence of groups of leg names.
    legs
        The kernel's (unsplit) leg names, e.g. ``("out", "in", "kh", "kw")``.
    split
        ``{leg: sub-leg sizes}`` for split legs (as from :func:`tnconv.legs.resolve_split`).
    min_groups, max_groups
        How many groups are allowed (``max_groups=2`` asks for a bipartition).

    Returns
    -------
    tuple of tuple of str
        The groups, in physical (sub-)leg names.

    Raises
    ------
    ValueError
        Unknown, duplicated or missing legs, an empty group, or the wrong number of groups.

    Examples
    --------
    >>> parse_cut("out,kh|in,kw", ("out", "in", "kh", "kw"))
    (('out', 'kh'), ('in', 'kw'))
    >>> parse_cut("out|in", ("out", "in"), {"out": (2, 2)})
    (('out0', 'out1'), ('in',))
    """
    split = dict(split or {})
    valid = physical_legs(legs, split)
    if isinstance(cut, str):
        text = cut.replace(" ", "")
        if not text:
            raise ValueError("empty cut; write it like 'out,kh|in,kw'")
        raw_groups = [g.split(",") if g else [] for g in text.split("|")]
    elif isinstance(cut, Sequence) and not isinstance(cut, (bytes, bytearray)):
        raw_groups = []
        for g in cut:
            if isinstance(g, str):
                raw_groups.append([g])
            elif isinstance(g, Sequence):
                raw_groups.append(list(g))
            else:
                raise TypeError(f"cut groups must be strings or sequences of strings, got {g!r}")
    else:
        raise TypeError(f"cut must be a string like 'out,kh|in,kw' or a sequence of groups, "
                        f"got {type(cut).__name__}")

    groups: list[tuple[str, ...]] = []
    for raw in raw_groups:
        if not raw or any(not isinstance(n, str) or n == "" for n in raw):
            raise ValueError(f"cut {cut!r} has an empty side or an empty leg name")
        groups.append(tuple(_expand_names(raw, valid, split)))

    seen: dict[str, int] = {}
    for g in groups:
        for n in g:
            seen[n] = seen.get(n, 0) + 1
    dupes = [n for n, c in seen.items() if c > 1]
    if dupes:
        raise ValueError(f"cut {cut!r} names leg(s) {', '.join(dupes)} more than once")
    missing = [n for n in valid if n not in seen]
    if missing:
        raise ValueError(
            f"cut {cut!r} leaves out leg(s) {', '.join(missing)}; every leg of "
            f"({', '.join(valid)}) must appear exactly once"
        )
    if len(groups) < min_groups:
        raise ValueError(
            f"cut {cut!r} has {len(groups)} group(s); at least {min_groups} separated by '|' "
            "are needed"
        )
    if max_groups is not None and len(groups) > max_groups:
        kind = "a bipartition (two groups)" if max_groups == 2 else f"at most {max_groups} groups"
        raise ValueError(f"cut {cut!r} has {len(groups)} groups; this function takes {kind}")
    return tuple(groups)


def _check_legs(legs: object) -> tuple[str, ...]:
    """Leg names as a tuple: a sequence (not a string) of two or more distinct strings."""
    if isinstance(legs, (str, bytes)) or not isinstance(legs, Sequence):
        raise TypeError(f"legs must be a sequence of leg names such as ('out', 'in', 'kh', "
                        f"'kw'), got {legs!r}")
    legs = tuple(legs)
    if not all(isinstance(n, str) and n for n in legs):
        raise TypeError(f"leg names must be strings, got {legs!r}")
    if len(legs) < 2:
        raise ValueError(f"legs: a cut needs at least two legs, got {legs}")
    if len(set(legs)) != len(legs):
        raise ValueError(f"duplicate leg names in legs={legs}")
    return legs


def all_cuts(legs: Sequence[str] | torch.Tensor | int) -> list[str]:
    """All distinct bipartitions of a set of legs.

    A bipartition and its mirror image are the same cut, so ``n`` legs give
    ``2**(n-1) - 1`` cuts (7 for a Conv2d kernel). The first leg is always on the left.

    Parameters
    ----------
    legs
        Leg names, a weight tensor, or its number of dimensions.

    Returns
    -------
    list of str
        Cut strings, ordered by the size of the left group, then lexicographically by
        leg position.

    Examples
    --------
    >>> all_cuts(("out", "in", "kh", "kw"))[:3]
    ['out|in,kh,kw', 'out,in|kh,kw', 'out,kh|in,kw']
    >>> len(all_cuts(4))
    7
    """
    if isinstance(legs, (torch.Tensor, int)) and not isinstance(legs, bool):
        legs = kernel_legs(legs)
    legs = _check_legs(legs)
    first, rest = legs[0], legs[1:]
    cuts = []
    for k in range(0, len(rest)):
        for combo in combinations(rest, k):
            left = (first, *combo)
            right = tuple(n for n in legs if n not in left)
            cuts.append(format_cut([left, right]))
    return cuts


def default_chain(legs: Sequence[str], split: Mapping[str, Sequence[int]] | None = None) -> str:
    """The default MPS chain: ``out``, the spatial legs, then ``in``, one site per (sub-)leg.

    For an unsplit Conv2d kernel this is ``"out|kh|kw|in"``.

    Examples
    --------
    >>> default_chain(("out", "in", "kh", "kw"))
    'out|kh|kw|in'
    >>> default_chain(("out", "in"), {"out": (2, 2)})
    'out0|out1|in'
    """
    legs = _check_legs(legs)
    order = (legs[0], *legs[2:], legs[1])
    return "|".join(physical_legs(order, dict(split or {})))
