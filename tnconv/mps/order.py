"""Which chain (order of legs) makes the smallest MPS: :func:`best_chain`.

An MPS (:func:`tnconv.to_mps`) depends on the order of its sites: the bond between sites
``k`` and ``k + 1`` must carry the entanglement of the bipartition "sites ``0..k`` | the rest",
so a chain that keeps strongly correlated legs next to each other needs smaller bonds.
:func:`best_chain` ranks candidate chains of one kernel, either

* by **parameters at a given error** (``max_error``): each chain is decomposed with
  ``to_mps(kernel, chain, max_error=max_error)`` and the chains are sorted by their parameter
  count (then by the error reached), or
* by **error at a given parameter budget** (``max_params``): each chain gets the largest
  *uniform* ``max_bond`` whose parameter count fits the budget (one bond dimension cap for
  every bond, not a per-bond allocation) and the chains are sorted by the error reached.

Which chains are tried:

* without sub-legs, every order of the legs up to reversal, one leg per site (``4! / 2 = 12``
  chains for a Conv2d kernel); chains that differ only in where legs of size 1 sit are the
  same chain and are scored once;
* with sub-legs (``split=``) the orders are too many, so a **beam search** builds chains left
  to right. A chain's bonds are fixed by the sets of legs left of each bond, and the
  singular values of those bipartitions (:func:`tnconv.decomp.svdvals` of the unfolding,
  cached per set) are cheap next to an MPS. With ``max_error`` the search adds up the
  estimated site sizes ``r_left * d * r_right``, each bond's rank being the one its
  bipartition needs for an even share ``max_error / sqrt(n - 1)`` of the error (an estimate:
  :func:`to_mps` spends the error over the bonds more cleverly); with ``max_params`` it adds
  up the bonds' entanglement entropies (bits). Only the
  ``beam`` best full chains (and the default chain) are then decomposed with :func:`to_mps`;
* ``candidates=``: exactly the chains given (any grouping of legs into sites).

The default chain (:func:`tnconv.cuts.default_chain`) is always scored, so the table shows
what the search gained over it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from itertools import permutations
from typing import Any

import torch

from ..cuts import CutSpec, default_chain, format_cut, parse_cut
from ..decomp import Criteria, check_max_error, check_positive_int, rank_for_error, svdvals
from ..legs import SplitSpec
from ..network import KernelLayout, compute_dtype, layout
from ..spectra import entropy
from .chain import KernelMPS, decompose_chain

__all__ = ["ChainTable", "best_chain"]

#: Without ``candidates``, chains are enumerated when there are at most this many physical
#: legs (``5! / 2 = 60`` chains); above, the beam search picks them.
MAX_ENUMERATED_LEGS = 5
_DIGITS = 5  # errors equal to this many decimals tie (float32 rounding is ~1e-7)
_COLUMNS = ("chain", "num_params", "compression_ratio", "rel_error", "bond_dims")


class ChainTable:
    """Chains of one kernel ranked best first (returned by :func:`best_chain`).

    Attributes
    ----------
    rows : list of dict
        One row per chain, best first: ``chain`` (cut string), ``num_params``,
        ``compression`` (dense / MPS parameters), ``rel_error`` (measured),
        ``bond_dims``, and ``max_bond`` when ranked by a parameter budget.
    criterion : str
        ``"max_error"`` (sorted by parameters) or ``"max_params"`` (sorted by error).
    target : float or int
        The ``max_error`` or ``max_params`` asked for.
    method : str
        How the chains were found: ``"enumerated"``, ``"beam"`` or ``"given"``.
    default_chain : str
        The default chain of the kernel (``"out|kh|kw|in"`` for Conv2d).
    default_row : dict or None
        Its row (kept even when ``top`` left it out of :attr:`rows`); None when
        ``candidates`` did not include it.
    dense_params : int
        Number of kernel entries.
    """

    def __init__(self, rows: list[dict[str, Any]], *, criterion: str, target: float,
                 method: str, default_chain: str, default_row: dict[str, Any] | None,
                 dense_params: int) -> None:
        self.rows = rows
        self.criterion = criterion
        self.target = target
        self.method = method
        self.default_chain = default_chain
        self.default_row = default_row
        self.dense_params = dense_params

    @property
    def best(self) -> str:
        """The best chain, as a cut string."""
        return str(self.rows[0]["chain"])

    @property
    def chains(self) -> list[str]:
        """The chains of :attr:`rows`, best first."""
        return [str(r["chain"]) for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]

    def to_pandas(self) -> Any:
        """The rows as a ``pandas.DataFrame`` (pandas imported on demand)."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def __str__(self) -> str:
        cols = list(_COLUMNS) + (["max_bond"] if self.criterion == "max_params" else [])
        cells = [[_cell(r[c]) for c in cols] for r in self.rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        lines = [f"best chains at {self.criterion}={self.target} ({self.method}, "
                 f"{self.dense_params} dense parameters)",
                 "  ".join(c.ljust(w) for c, w in zip(cols, widths))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"ChainTable({self.criterion}={self.target}, best={self.best!r}, "
                f"{len(self.rows)} chains, method={self.method!r})")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def best_chain(
    kernel: torch.Tensor,
    *,
    max_error: float | None = None,
    max_params: int | None = None,
    split: SplitSpec = None,
    candidates: Sequence[CutSpec] | None = None,
    top: int | None = None,
    beam: int = 8,
) -> ChainTable:
    """Rank the chains (orders of legs) of an MPS of ``kernel``, best first.

    Parameters
    ----------
    kernel
        A Linear/Conv1d/Conv2d/Conv3d weight (not modified).
    max_error
        Rank by parameters at this relative error, in ``(0, 1)`` (default 0.1 when neither
        ``max_error`` nor ``max_params`` is given).
    max_params
        Rank by the error reached within this many parameters (an int >= 1), with the
        largest uniform ``max_bond`` that fits, per chain.
    split
        Sub-legs, as for :func:`tnconv.to_mps` (``{"out": (4, 4, 4)}``, ``"binary"``).
    candidates
        Explicit chains to score (cut strings or sequences of groups); default: every order
        of the (sub-)legs up to reversal, or the beam search when there are more than
        :data:`MAX_ENUMERATED_LEGS` physical legs.
    top
        Keep only the ``top`` best rows (default: all scored chains).
    beam
        Beam search only: how many full chains it hands to :func:`tnconv.to_mps`.

    Returns
    -------
    ChainTable
        Rows best first; ``.best`` is the best chain, ``.to_pandas()`` a DataFrame.

    Raises
    ------
    TypeError, ValueError
        A bad kernel or split, both ``max_error`` and ``max_params``, a ``max_error`` outside
        ``(0, 1)``, a non-positive ``max_params``, ``top`` or ``beam``, a bad candidate, or a
        budget below the smallest chain.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> a, b = torch.randn(8, 3, generator=g), torch.randn(4, 3, generator=g)
    >>> w = torch.einsum("ow,ih->oihw", a, b)  # out only with kw, in only with kh
    >>> table = best_chain(w, max_error=0.01)
    >>> len(table), table.best, table[0]["bond_dims"], table[0]["num_params"]
    (12, 'out|kw|in|kh', [3, 1, 3], 54)
    >>> table.default_chain, table.default_row["bond_dims"], table.default_row["num_params"]
    ('out|kh|kw|in', [3, 9, 3], 198)
    """
    lay = layout(kernel, split)
    criterion, target = _check_target(max_error, max_params)
    if top is not None:
        check_positive_int("top", top)
    check_positive_int("beam", beam)
    default = default_chain(lay.legs, lay.split)
    if candidates is not None:
        chains, method = _given_chains(candidates, lay), "given"
    elif len(lay.physical_legs) <= MAX_ENUMERATED_LEGS:
        chains, method = _enumerated_chains(lay, default), "enumerated"
    else:
        guide = _beam_search(kernel, lay, criterion, target, beam)
        chains, method = _unique_chains([default.split("|"), *guide], lay), "beam"
    if criterion == "max_error":
        crit = Criteria(max_error=target)
        rows = [_row(decompose_chain(kernel, c, crit, split=split), lay) for c in chains]
        rows.sort(key=lambda r: (r["num_params"], round(r["rel_error"], _DIGITS)))
    else:
        rows = [r for c in chains if (r := _budget_row(kernel, c, lay, split, int(target)))]
        if not rows:
            smallest = min(_params(_chain_dims(c, lay), [1] * (len(c) - 1)) for c in chains)
            raise ValueError(f"max_params={target} is below the smallest chain ({smallest} "
                             "parameters with every bond of dimension 1)")
        rows.sort(key=lambda r: (round(r["rel_error"], _DIGITS), r["num_params"]))
    default_row = next((r for r in rows if _same(r["chain"], default, lay)), None)
    return ChainTable(rows[:top] if top else rows, criterion=criterion, target=target,
                      method=method, default_chain=default, default_row=default_row,
                      dense_params=math.prod(lay.shape))


def _check_target(max_error: object, max_params: object) -> tuple[str, float]:
    if max_error is not None and max_params is not None:
        raise ValueError(f"give max_error or max_params, not both (got max_error={max_error!r}, "
                         f"max_params={max_params!r})")
    if max_params is not None:
        return "max_params", check_positive_int("max_params", max_params)
    if max_error is None:
        return "max_error", 0.1
    if check_max_error(max_error) == 0:
        raise ValueError("max_error must be in (0, 1), got 0; use max_params or an exact "
                         "to_mps for lossless chains")
    return "max_error", float(max_error)  # type: ignore[arg-type]


# -- candidates -------------------------------------------------------------------------------


def _key(sites: Sequence[Sequence[str]], lay: KernelLayout) -> tuple:
    """Chains equal up to reversal and up to where legs of size 1 sit share one key."""
    size = lay.sizes
    seq = tuple(g for g in (tuple(n for n in s if size[n] > 1) for s in sites) if g)
    return min(seq, seq[::-1])


def _same(chain: str, other: str, lay: KernelLayout) -> bool:
    return _key(parse_cut(chain, lay.legs, lay.split), lay) == _key(
        parse_cut(other, lay.legs, lay.split), lay)


def _unique_chains(chains: Sequence[Sequence[Any]], lay: KernelLayout) -> list[str]:
    seen: set[tuple] = set()
    out = []
    for c in chains:
        sites = [(s,) if isinstance(s, str) else tuple(s) for s in c]
        k = _key(sites, lay)
        if k not in seen:
            seen.add(k)
            out.append(format_cut(sites))
    return out


def _enumerated_chains(lay: KernelLayout, default: str) -> list[str]:
    """The default chain first, then every order up to reversal (and size-1 placement)."""
    pos = {n: i for i, n in enumerate(lay.physical_legs)}
    orders = [p for p in permutations(lay.physical_legs) if pos[p[0]] < pos[p[-1]]]
    return _unique_chains([default.split("|"), *orders], lay)


def _given_chains(candidates: object, lay: KernelLayout) -> list[str]:
    if isinstance(candidates, str) or not isinstance(candidates, Sequence):
        raise TypeError("candidates must be a list of chains such as ['out|kh|kw|in'], got "
                        f"{candidates!r}")
    if len(candidates) == 0:
        raise ValueError("candidates must not be empty: pass chains such as ['out|kh|kw|in']")
    return _unique_chains([parse_cut(c, lay.legs, lay.split) for c in candidates], lay)


# -- the beam search --------------------------------------------------------------------------


def _beam_search(kernel: torch.Tensor, lay: KernelLayout, criterion: str, target: float,
                 beam: int) -> list[tuple[str, ...]]:
    """The ``beam`` best chains (one (sub-)leg per site) by the cheap bipartition cost."""
    legs = lay.physical_legs
    n, size = len(legs), lay.sizes
    spectra = _BipartitionSpectra(kernel, lay)
    share = target / math.sqrt(n - 1) if criterion == "max_error" else 0.0

    values: dict[frozenset, float] = {}

    def bond(left: frozenset) -> float:  # rank (max_error) or entropy (max_params), cached
        if left not in values:
            if not left or len(left) == n:
                values[left] = 1.0 if criterion == "max_error" else 0.0
            elif criterion == "max_error":
                values[left] = float(max(1, rank_for_error(spectra(left), share)))
            else:
                values[left] = float(entropy(spectra(left)))
        return values[left]

    width = 4 * beam  # sets of legs kept per level
    states: dict[frozenset, list[tuple[float, tuple[str, ...]]]] = {frozenset(): [(0.0, ())]}
    for _ in range(n):
        grown: dict[frozenset, list[tuple[float, tuple[str, ...]]]] = defaultdict(list)
        for left, paths in states.items():
            r_left = bond(left)
            for leg in legs:
                if leg in left:
                    continue
                new = left | {leg}
                r_new = bond(new)
                step = r_left * size[leg] * r_new if criterion == "max_error" else r_new
                grown[new].extend((cost + step, seq + (leg,)) for cost, seq in paths)
        for key, paths in grown.items():
            grown[key] = sorted(paths)[: 2 * beam]  # reversals come in pairs
        best_sets = sorted(grown, key=lambda k: grown[k][0][0])[:width]
        states = {k: grown[k] for k in best_sets}
    (paths,) = states.values()
    return [seq for _, seq in paths]


class _BipartitionSpectra:
    """Singular values of the unfolding "legs in ``left`` | the rest", cached per set."""

    def __init__(self, kernel: torch.Tensor, lay: KernelLayout) -> None:
        self.lay = lay
        self.work = kernel.detach().to(compute_dtype(kernel)).reshape(lay.physical_shape)
        self.cache: dict[frozenset, torch.Tensor] = {}

    def __call__(self, left: frozenset) -> torch.Tensor:
        legs = self.lay.physical_legs
        key = left if legs[0] in left else frozenset(legs) - left  # s(A) == s(complement)
        if key not in self.cache:
            rows = [i for i, n in enumerate(legs) if n in key]
            cols = [i for i, n in enumerate(legs) if n not in key]
            shape = self.work.shape
            m = self.work.permute(rows + cols).reshape(
                math.prod(shape[i] for i in rows), math.prod(shape[i] for i in cols))
            with torch.no_grad():
                self.cache[key] = svdvals(m)
        return self.cache[key]


# -- scoring ----------------------------------------------------------------------------------


def _row(mps: KernelMPS, lay: KernelLayout) -> dict[str, Any]:
    return {"chain": mps.cut, "num_params": int(mps.num_params),
            "compression_ratio": math.prod(lay.shape) / mps.num_params,
            "rel_error": float(mps.rel_error), "bond_dims": list(mps.bond_dims)}


def _chain_dims(chain: str | Sequence[Sequence[str]], lay: KernelLayout) -> list[int]:
    sites = parse_cut(chain, lay.legs, lay.split) if isinstance(chain, str) else chain
    return [math.prod(lay.sizes[n] for n in s) for s in sites]


def _params(dims: list[int], ranks: list[int]) -> int:
    r = [1, *ranks, 1]
    return sum(r[k] * d * r[k + 1] for k, d in enumerate(dims))


def _uniform_ranks(dims: list[int], chi: int) -> list[int]:
    """Bond dimensions of a chain whose every bond is capped at ``chi`` (full ranks below)."""
    full = [min(math.prod(dims[: k + 1]), math.prod(dims[k + 1:])) for k in range(len(dims) - 1)]
    ranks = [min(chi, f) for f in full]
    for k in range(len(ranks) - 2, -1, -1):  # a bond cannot exceed its right site's rank
        ranks[k] = min(ranks[k], dims[k + 1] * ranks[k + 1])
    return ranks


def _budget_row(kernel: torch.Tensor, chain: str, lay: KernelLayout, split: SplitSpec,
                budget: int) -> dict[str, Any] | None:
    """The chain at the largest uniform ``max_bond`` within ``budget`` (None if none fits)."""
    dims = _chain_dims(chain, lay)
    top = max(_uniform_ranks(dims, math.prod(dims)) or [1])
    chi = max((c for c in range(1, top + 1) if _params(dims, _uniform_ranks(dims, c)) <= budget),
              default=1)
    best = None
    while chi >= 1:  # the prediction is checked against the decomposition itself
        mps = decompose_chain(kernel, chain, Criteria(max_bond=chi), split=split)
        if mps.num_params <= budget:
            best = (chi, mps)
            break
        chi -= 1
    while best is not None:  # and raised while a larger cap still fits and changes the chain
        bigger = decompose_chain(kernel, chain, Criteria(max_bond=best[0] + 1), split=split)
        if bigger.num_params > budget or bigger.bond_dims == best[1].bond_dims:
            return {**_row(best[1], lay), "max_bond": best[0]}
        best = (best[0] + 1, bigger)
    return None
