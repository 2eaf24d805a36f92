"""Contraction orders found by cotengra, cached in-process and on disk, run as torch einsums.

:mod:`tnconv.contraction` rebuilds kernels from their factors: small networks, one per layer,
whose opt_einsum path is found in microseconds. Contracting an *input* with the factors (the
forward pass of an MPO layer, :class:`tnconv.layers.MPOLinear`) is a different network: one
large tensor (the batch) and a chain of cores, where the order decides whether the batch is
carried through every bond (the left-to-right order of a plain TT-matrix layer) or the cores
first meet each other. Those orders come from a cotengra ``HyperOptimizer`` (greedy trials,
``minimize="combo"``: FLOPs plus memory writes), run once per network structure:

* the structure (index names, in order of appearance, and shapes, the batch size included)
  is the key; the first call in a process searches (a few tens of milliseconds) or reads the
  path that an earlier process stored under ``tnconv.runtime.cache_dir("cotengra")``, one JSON
  file per structure written with :func:`tnconv.runtime.atomic_write`; later calls get it from
  memory;
* the path (linear, opt_einsum's format) is turned into pairwise ``torch.einsum`` steps by
  opt_einsum, so the result stays on the arrays' device with autograd intact, and the step
  lookup is a function ``torch.compiler`` treats as constant for a structure (as
  :func:`tnconv.contraction.contract` does): ``torch.compile(..., fullgraph=True,
  dynamic=False)`` traces it (with dynamic shapes the batch size, part of the key, would
  be symbolic);
* every path carries cotengra's estimates: multiply-adds, the peak number of elements alive
  at once, and the elements written (every intermediate and the output: what the backward
  pass keeps). The layers choose between this contraction and rebuilding the kernel with
  them (:meth:`tnconv.layers.MPOLinear.estimate`).

:func:`path_cache_info` counts memory hits, disk reads and searches (a second call on one
structure searches nothing); :func:`clear_path_cache` empties the in-process cache.

Examples
--------
>>> import torch
>>> x, a, b = torch.ones(5, 4), torch.ones(4, 3), torch.ones(3, 2)
>>> out = hyper_contract([x, a, b], [("n", "i"), ("i", "j"), ("j", "k")], ("n", "k"),
...                      persist=False)
>>> out.shape, float(out[0, 0])
(torch.Size([5, 2]), 12.0)
>>> hyper_path([("n", "i"), ("i", "j"), ("j", "k")], [(5, 4), (4, 3), (3, 2)], ("n", "k"),
...            persist=False).flops  # a @ b first: 4*3*2 + 5*4*2
64
"""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import opt_einsum
import torch

from .contraction import check_arrays, run_steps
from .runtime import atomic_write, cache_dir

__all__ = ["SEARCH", "HyperPath", "PathCacheInfo", "clear_path_cache", "hyper_contract",
           "hyper_path", "path_cache_info"]

#: The cotengra search: trials of the greedy optimiser with random hyper-parameters, scored
#: by FLOPs plus memory writes (cotengra's ``"combo"``). Part of the disk cache's key.
SEARCH: dict[str, Any] = {"methods": ("greedy",), "max_repeats": 16, "minimize": "combo",
                          "optlib": "random"}
_FORMAT = 1  # version of the JSON files
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True)
class HyperPath:
    """A contraction order for one network structure, with cotengra's estimates.

    Attributes
    ----------
    path
        Linear path (opt_einsum's format): pairs of positions contracted, the result appended.
    steps
        ``(positions popped, einsum equation)`` per pairwise step.
    flops
        Multiply-adds of the whole contraction.
    peak
        Largest number of elements alive at once (inputs included).
    writes
        Elements written: every intermediate and the output (what the backward pass keeps).
    source
        How this process got it: ``"search"`` or ``"disk"``.
    """

    path: tuple[tuple[int, int], ...]
    steps: tuple[tuple[tuple[int, ...], str], ...]
    flops: int
    peak: int
    writes: int
    source: str


class PathCacheInfo(NamedTuple):
    """Statistics of the path cache since the process started (or the last clear)."""

    memory_hits: int
    disk_reads: int
    searches: int
    size: int


_MEMORY: dict[tuple[str, tuple[tuple[int, ...], ...]], HyperPath] = {}
_STATS = {"memory_hits": 0, "disk_reads": 0, "searches": 0}
_LOCK = threading.Lock()
_WARNED: set[str] = set()


def _structure(inds: Sequence[Sequence[str]], shapes: Sequence[Sequence[int]],
               output_inds: Sequence[str]) -> tuple[str, tuple[tuple[int, ...], ...]]:
    """The einsum equation (letters in order of first appearance) and the shapes, checked."""
    if len(inds) != len(shapes):
        raise ValueError(f"got {len(inds)} index tuples but {len(shapes)} shapes")
    symbols: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for k, (ix, shp) in enumerate(zip(inds, shapes, strict=True)):
        if len(ix) != len(shp):
            raise ValueError(f"indices {tuple(ix)} do not match shape {tuple(shp)} (array {k})")
        for i, d in zip(ix, shp, strict=True):
            if sizes.setdefault(i, int(d)) != int(d):
                raise ValueError(f"index {i!r} has sizes {sizes[i]} and {int(d)}; a shared "
                                 "index must have one size")
            symbols.setdefault(i, opt_einsum.get_symbol(len(symbols)))
    missing = [i for i in output_inds if i not in sizes]
    if missing:
        raise ValueError(f"output index {missing[0]!r} is on no array")
    if len(symbols) > len(_LETTERS):
        raise ValueError(f"{len(symbols)} distinct indices: torch.einsum takes at most 52")
    lhs = ",".join("".join(symbols[i] for i in ix) for ix in inds)
    eq = f"{lhs}->{''.join(symbols[i] for i in output_inds)}"
    return eq, tuple(tuple(int(d) for d in s) for s in shapes)


def _file(eq: str, shapes: tuple[tuple[int, ...], ...]) -> Path:
    key = json.dumps([_FORMAT, eq, shapes, {k: list(v) if isinstance(v, tuple) else v
                                            for k, v in SEARCH.items()}])
    return cache_dir("cotengra") / f"{hashlib.sha256(key.encode()).hexdigest()[:40]}.json"


def _search(eq: str, shapes: tuple[tuple[int, ...], ...]) -> dict[str, Any]:
    """cotengra's path and estimates for the equation (cotengra imported here only)."""
    import cotengra as ctg

    lhs, rhs = eq.split("->")
    inputs = [tuple(term) for term in lhs.split(",")]
    size = {c: d for term, shp in zip(inputs, shapes, strict=True)
            for c, d in zip(term, shp, strict=True)}
    if len(inputs) == 1:
        return {"path": [], "flops": 0, "peak": 0, "writes": 0}
    opt = ctg.HyperOptimizer(methods=list(SEARCH["methods"]), max_repeats=SEARCH["max_repeats"],
                             minimize=SEARCH["minimize"], optlib=SEARCH["optlib"],
                             parallel=False, progbar=False)
    tree = opt.search(inputs, tuple(rhs), size)
    return {"path": [list(p) for p in tree.get_path()], "flops": int(tree.contraction_cost()),
            "peak": int(tree.peak_size()), "writes": int(tree.total_write())}


def _read(path: Path, eq: str, shapes: tuple[tuple[int, ...], ...]) -> dict[str, Any] | None:
    """A stored path for this structure, or None (absent, unreadable or for another one)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if (not isinstance(record, dict) or record.get("eq") != eq
            or record.get("shapes") != [list(s) for s in shapes]):
        return None
    return record


def _write(path: Path, record: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda fh: fh.write(json.dumps(record).encode()))
    except OSError as exc:  # the cache is an optimisation: say so once, go on
        if str(path.parent) not in _WARNED:
            _WARNED.add(str(path.parent))
            warnings.warn(f"cannot store contraction paths in {path.parent}: {exc}",
                          stacklevel=3)


def _build(eq: str, shapes: tuple[tuple[int, ...], ...], record: dict[str, Any],
           source: str) -> HyperPath:
    path = tuple((int(a), int(b)) for a, b in record["path"])
    if len(shapes) == 1:
        steps: tuple[tuple[tuple[int, ...], str], ...] = (((0,), eq),)
    else:
        _, info = opt_einsum.contract_path(eq, *shapes, shapes=True, optimize=list(path))
        steps = tuple((tuple(step[0]), step[2]) for step in info.contraction_list)
    return HyperPath(path, steps, int(record["flops"]), int(record["peak"]),
                     int(record["writes"]), source)


def hyper_path(inds: Sequence[Sequence[str]], shapes: Sequence[Sequence[int]],
               output_inds: Sequence[str], *, persist: bool = True) -> HyperPath:
    """The cotengra contraction order of a network structure: from memory, disk or a search.

    Parameters
    ----------
    inds
        Index names of each tensor; a name on two tensors is summed over.
    shapes
        Shape of each tensor (the batch size included: another batch size is another path).
    output_inds
        Index names of the result, in order.
    persist
        Read and store the path under ``tnconv.runtime.cache_dir("cotengra")``.

    Returns
    -------
    HyperPath
        The path, its einsum steps and cotengra's FLOP and memory estimates.

    Raises
    ------
    ValueError
        Indices that do not match the shapes, an index with two sizes, an output index on no
        tensor, or more than 52 distinct indices.

    Examples
    --------
    >>> p = hyper_path([("n", "i"), ("i", "j")], [(5, 4), (4, 3)], ("n", "j"), persist=False)
    >>> p.path, p.steps
    (((0, 1),), (((1, 0), 'bc,ab->ac'),))
    """
    eq, key = _structure(inds, shapes, output_inds)
    with _LOCK:
        hit = _MEMORY.get((eq, key))
        if hit is not None:
            _STATS["memory_hits"] += 1
            return hit
    file = _file(eq, key)
    record = _read(file, eq, key) if persist else None
    source = "disk"
    if record is None:
        record = {"eq": eq, "shapes": [list(s) for s in key], **_search(eq, key)}
        source = "search"
        if persist:
            _write(file, record)
    try:
        found = _build(eq, key, record, source)
    except (KeyError, TypeError, ValueError):  # a damaged file: search again, overwrite it
        if source == "search":
            raise
        record = {"eq": eq, "shapes": [list(s) for s in key], **_search(eq, key)}
        found, source = _build(eq, key, record, "search"), "search"
        _write(file, record)
    with _LOCK:
        _STATS["disk_reads" if source == "disk" else "searches"] += 1
        return _MEMORY.setdefault((eq, key), found)


@torch.compiler.assume_constant_result
def _steps(inds: tuple[tuple[str, ...], ...], shapes: tuple[tuple[int, ...], ...],
           output_inds: tuple[str, ...], persist: bool) -> tuple[tuple[tuple[int, ...], str], ...]:
    return hyper_path(inds, shapes, output_inds, persist=persist).steps


def hyper_contract(arrays: Sequence[torch.Tensor], inds: Sequence[Sequence[str]],
                   output_inds: Sequence[str], *, persist: bool = True) -> torch.Tensor:
    """Contract torch tensors with named indices along their cached cotengra path.

    Parameters
    ----------
    arrays
        The tensors (one device and dtype).
    inds
        Index names of each tensor.
    output_inds
        Index names of the result, in order.
    persist
        Keep the path on disk too (see :func:`hyper_path`).

    Returns
    -------
    torch.Tensor
        On the arrays' device; differentiable (pairwise ``torch.einsum`` steps).

    Examples
    --------
    >>> a, b = torch.ones(2, 3), torch.ones(3, 4)
    >>> hyper_contract([a, b], [("i", "k"), ("k", "j")], ("i", "j"), persist=False).shape
    torch.Size([2, 4])
    """
    shapes = check_arrays(arrays, inds)
    return run_steps(arrays, _steps(tuple(tuple(i) for i in inds), shapes, tuple(output_inds),
                                    persist))


def path_cache_info() -> PathCacheInfo:
    """Memory hits, disk reads and searches of :func:`hyper_path` so far, and the cache size.

    Examples
    --------
    >>> path_cache_info().searches >= 0
    True
    """
    with _LOCK:
        return PathCacheInfo(_STATS["memory_hits"], _STATS["disk_reads"], _STATS["searches"],
                             len(_MEMORY))


def clear_path_cache() -> None:
    """Empty the in-process cache and reset the counters (the files on disk stay).

    Examples
    --------
    >>> clear_path_cache()
    >>> path_cache_info().size
    0
    """
    with _LOCK:
        _MEMORY.clear()
        for k in _STATS:
            _STATS[k] = 0
