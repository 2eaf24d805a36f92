"""Bond ranks of an MPS chain, array level: TT-SVD and the allocation of a ``max_error``.

No legs, no labels: a tensor ``a`` of shape ``dims = (d_0, ..., d_{n-1})`` (one axis per site)
and the bond ranks ``r_0 .. r_{n-2}``.

* :class:`TTSVD` runs the left-to-right TT-SVD of ``a`` for any ranks, its steps cached by the
  ranks chosen before them, so many rank choices are compared cheaply. The TT-SVD is an
  orthogonal projection: its squared error is the sum of the squared singular values it drops.
* :func:`minimal_ranks` caps ranks at ``min(r_{k-1} d_k, d_{k+1} r_{k+1})``.
* :func:`allocate_error` spends a relative error over all bonds together: every step's rank
  from its actual spectrum, the original cut spectra's tails bounding the bonds to come, the
  budget left carried on; then greedy reductions checked with the exact error; the smallest
  uniform rank meeting the error too; the chain with fewer parameters wins.
* :func:`ends_first` (3- and 4-site chains) fixes the end bonds first, from the singular
  vectors of the first and last unfoldings, and splits the projected middle by one truncated
  SVD: exact errors, searched over the end ranks; :func:`ends_first_cores` builds it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ..decomp import left_singular, svd
from .als import chain_params, tail_squares

__all__ = ["TTSVD", "allocate_error", "chain_params", "ends_first", "ends_first_cores",
           "minimal_ranks", "tail_squares", "uniform_rank"]

_Step = tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[float]]
_Choose = Callable[[int, torch.Tensor, list[float]], int]


def minimal_ranks(dims: Sequence[int], ranks: Sequence[int], *, fixed: int = 0) -> list[int]:
    """Cap ranks at ``min(r_{k-1} * d_k, d_{k+1} * r_{k+1})`` (repeated to a fixed point).

    The first ``fixed`` ranks are left alone (already built).

    Examples
    --------
    >>> minimal_ranks([4, 3, 3, 2], [100, 100, 100])
    [4, 6, 2]
    """
    r = [max(1, int(x)) for x in ranks]
    n = len(dims)
    changed = True
    while changed:
        changed = False
        for k in range(fixed, n - 1):
            left = (r[k - 1] if k else 1) * dims[k]
            right = dims[k + 1] * (r[k + 1] if k + 1 < n - 1 else 1)
            new = max(1, min(r[k], left, right))
            if new != r[k]:
                r[k], changed = new, True
    return r


def _svd(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`tnconv.decomp.svd`; a nonzero row or column in closed form, as LAPACK gives it
    (``vh = 1`` for a column, ``u = 1`` for a row)."""
    if min(m.shape) == 1:
        s = torch.linalg.vector_norm(m).reshape(1)
        if s.item() > 0:
            one = m.new_ones(1, 1)
            return (m / s, s, one) if m.shape[1] == 1 else (one, s, m / s)
    return svd(m)


def _negligible_rank(tails: list[float], limit2: float) -> int:
    """Smallest rank >= 1 whose squared tail is at most ``limit2``."""
    for r, t in enumerate(tails):
        if t <= limit2:
            return max(1, r)
    return len(tails) - 1


class TTSVD:
    """Left-to-right TT-SVD of one tensor, for any ranks; steps cached by the ranks before them.

    Parameters
    ----------
    a
        The tensor, shape ``dims`` (float32 or float64).
    tol
        Singular values whose squared tail is at most ``(tol * ||a||)^2`` are dropped at every
        step (numerically zero): the bonds come out minimal.
    fast
        Errors only (no cores): every step goes through the float64 Gram matrix of its small
        side and ``eigh`` (several times faster than an SVD; squared tails accurate to about
        ``1e-16 ||a||^2``).
    norm2
        ``||a||^2`` where already known (else computed in float64).

    Examples
    --------
    >>> a = torch.randn(4, 3, 5, dtype=torch.float64)
    >>> tt = TTSVD(a)
    >>> ranks, err2, cores = tt.run([4, 5])
    >>> ranks, err2 < 1e-20
    ([4, 5], True)
    """

    def __init__(self, a: torch.Tensor, tol: float = 1e-13, *, fast: bool = False,
                 norm2: float | None = None) -> None:
        self.a = a
        self.fast = fast
        self.dims = tuple(int(d) for d in a.shape)
        if norm2 is None:
            a64 = a.detach().double()
            norm2 = float((a64 * a64).sum())
        self.norm2 = norm2
        self.limit2 = (tol**2) * self.norm2
        self._cache: dict[tuple[int, ...], _Step] = {}
        self._vh: dict[tuple[int, ...], torch.Tensor] = {}  # right factors of SVD steps
        self._alike: set[tuple[int, ...]] = set()  # steps computed alike with or without fast

    def _step(self, prefix: tuple[int, ...]) -> _Step:
        """``u``, ``s @ vh`` (rows: singular directions), ``s`` and its squared tails at step
        ``len(prefix)``."""
        hit = self._cache.get(prefix)
        if hit is not None:
            return hit
        k = len(prefix)
        if k == 0:
            rest = self.a.reshape(self.dims[0], -1)
        else:
            _, svh_prev, s_prev, _ = self._step(prefix[:-1])
            r = prefix[-1]
            vh_prev = self._vh.get(prefix[:-1])
            if self.dims[k] == 1 and vh_prev is not None:  # rest = s_prev @ vh_prev: an SVD
                s, self._vh[prefix] = s_prev[:r], vh_prev[:r]
                out = (torch.eye(r, dtype=s.dtype, device=s.device), svh_prev[:r], s,
                       tail_squares(s))
                self._cache[prefix] = out
                return out
            rest = svh_prev[:r].reshape(r * self.dims[k], -1)
        rows, cols = rest.shape
        if self.fast and rows > cols:  # s @ vh straight from the eigenvectors of rest^T rest
            m64 = rest.double()
            evals, v = torch.linalg.eigh(m64.mT @ m64)
            s = evals.flip(0).clamp_min(0).sqrt()
            u, svh = rest.new_zeros(0), (s[:, None] * v.flip(1).mT).to(rest.dtype)
        elif (self.fast or rest.dtype == torch.float32) and rows <= cols and (
                self.fast or rest.numel() > 1 << 16):
            u, s = left_singular(rest)  # float64 Gram: faster than an SVD, as accurate
            svh = u.mT @ rest
            if rest.dtype == torch.float32 and rest.numel() > 1 << 16:  # fast or not alike
                self._alike.add(prefix)
        else:
            u, s, vh = _svd(rest)
            svh = s[:, None] * vh
            self._vh[prefix] = vh
        out = (u, svh, s, tail_squares(s))
        self._cache[prefix] = out
        return out

    def run(self, ranks: Sequence[int] | _Choose, *,
            build: bool = True) -> tuple[list[int], float, list[torch.Tensor]]:
        """Ranks used, squared error (discarded weight) and, with ``build``, the cores.

        ``ranks`` is a sequence (capped at each step's rank) or ``choose(k, s, tails)`` that
        picks the rank of step ``k`` from its singular values and their squared tails. Cores
        are ``(r_{k-1}, d_k, r_k)``, left-orthonormal but the last.
        """
        used: list[int] = []
        err2 = 0.0
        cores: list[torch.Tensor] = []
        r_prev = 1
        for k in range(len(self.dims) - 1):
            u, svh, s, tails = self._step(tuple(used))
            want = ranks(k, s, tails) if callable(ranks) else ranks[k]
            r = max(1, min(int(want), len(tails) - 1, _negligible_rank(tails, self.limit2)))
            err2 += tails[r]
            used.append(r)
            if build:
                if self.fast:
                    raise ValueError("a fast TTSVD gives errors only; build=False")
                cores.append((u if r == u.shape[1] else u[:, :r]).reshape(r_prev, self.dims[k], r))
            r_prev = r
        if build:
            svh = self._step(tuple(used[:-1]))[1]
            svh = svh if r_prev == svh.shape[0] else svh[:r_prev]
            cores.append(svh.reshape(r_prev, self.dims[-1], 1))
        return used, err2, cores

    def adopt(self, other: TTSVD) -> None:
        """Take over the steps of ``other`` (a TT-SVD of the same tensor, e.g. a fast one) that
        this one computes identically (every step up to them a float32 wide Gram route)."""
        for p in other._alike:
            if all(p[:j] in other._alike for j in range(len(p))):
                self._cache.setdefault(p, other._cache[p])
                self._alike.add(p)

    def schmidt(self, ranks: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        """Per bond ``j`` of the run with these (used) ranks, ``(s[:r_j], vh[:r_j])`` of step
        ``j`` where every later step kept all its singular values (the chain's Schmidt values
        and right vectors at bond ``j``, ``vh`` of shape ``(r_j, d_{j+1} ... d_{n-1})``) and
        step ``j`` was an SVD; None for the other bonds (a prefix of them)."""
        ranks = [int(x) for x in ranks]
        out: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(ranks)
        for j in range(len(ranks) - 1, -1, -1):
            prefix, r = tuple(ranks[:j]), ranks[j]
            vh = self._vh.get(prefix)  # set with the step's cache entry
            if vh is None:
                break
            s = self._cache[prefix][2]
            full = r == s.shape[0]
            out[j] = (s, vh) if full else (s[:r], vh[:r])
            if not full:  # step j truncated: the bonds before it are no Schmidt bonds
                break
        return out

    def error2(self, ranks: Sequence[int]) -> float:
        """Squared error of the TT-SVD with these ranks (no cores built)."""
        return self.run(ranks, build=False)[1]


def _plan(dims: Sequence[int], ranks: list[int], fixed: int, tails: Sequence[list[float]],
          budget: float) -> list[int]:
    """Greedy: lower the free ranks (index >= ``fixed``) by one at a time, best parameter
    saving per squared-tail increase first, while the summed tails stay within ``budget``.
    ``tails[j]`` are the squared tails of bond ``fixed + j``."""
    r = minimal_ranks(dims, ranks, fixed=fixed)
    free = range(fixed, len(r))

    def cost(rr: list[int]) -> float:
        return sum(tails[j - fixed][min(rr[j], len(tails[j - fixed]) - 1)] for j in free)

    spent, params = cost(r), chain_params(dims, r)
    while True:
        best = None
        for j in free:
            if r[j] <= 1:
                continue
            cand = minimal_ranks(dims, [*r[:j], r[j] - 1, *r[j + 1:]], fixed=fixed)
            c = cost(cand)
            if c > budget:
                continue
            p = chain_params(dims, cand)
            score = (params - p) / max(c - spent, 1e-300)
            if best is None or score > best[0]:
                best = (score, cand, c, p)
        if best is None:
            return r
        _, r, spent, params = best


def _sequential(tt: TTSVD, caps: list[int], bounds: list[list[float]],
                budget: float) -> list[int]:
    """TT-SVD whose step ``k`` takes its rank from a plan over the actual spectrum of the step
    and the original bounds of the later bonds, with the budget left over carried on."""
    spent = 0.0
    chosen: list[int] = []

    def choose(k: int, s: torch.Tensor, tails: list[float]) -> int:
        nonlocal spent
        start = [*chosen, *caps[k:]]
        start[k] = min(start[k], len(tails) - 1)
        plan = _plan(tt.dims, start, k, [tails, *bounds[k + 1:]], budget - spent)
        spent += tails[plan[k]]
        chosen.append(plan[k])
        return plan[k]

    return tt.run(choose, build=False)[0]


def _refine(tt: TTSVD, ranks: list[int], budget: float, max_evals: int = 400,
            bounds: Sequence[list[float]] | None = None) -> list[int]:
    """Greedy rank reductions, each checked with the exact error of the TT-SVD.

    With ``bounds`` (the original cuts' squared tails), a reduction that one cut alone puts
    over the budget is rejected without a TT-SVD: any chain with rank ``r_k`` at bond ``k``
    has a squared error of at least that cut's tail at ``r_k`` (Eckart-Young)."""
    dims = tt.dims
    r = minimal_ranks(dims, ranks)
    err2, params = tt.error2(r), chain_params(dims, r)
    steps = [max(1, x // 8) for x in r]
    evals = 0
    while evals < max_evals and any(steps):
        best = None
        for j in range(len(r)):
            steps[j] = min(steps[j], r[j] - 1)
            if steps[j] < 1:
                steps[j] = 0
                continue
            cand = minimal_ranks(dims, [*r[:j], r[j] - steps[j], *r[j + 1:]])
            if bounds is not None and any(b[min(c, len(b) - 1)] > budget
                                          for b, c in zip(bounds, cand, strict=True)):
                steps[j] //= 2  # over the budget for certain: no TT-SVD needed
                continue
            e = tt.error2(cand)
            evals += 1
            if e > budget:
                steps[j] //= 2
                continue
            p = chain_params(dims, cand)
            score = (params - p) / max(e - err2, 1e-300)
            if best is None or score > best[0]:
                best = (score, cand, e, p)
        if best is not None:
            _, r, err2, params = best
    return r


def uniform_rank(tt: TTSVD, caps: Sequence[int], budget: float,
                 bounds: Sequence[list[float]] | None = None) -> list[int]:
    """Ranks of the smallest uniform rank (capped by ``caps``, minimal) whose TT-SVD error is
    within ``budget`` (squared, absolute); bisection, then a check of the ranks just below.
    With ``bounds`` (the cuts' squared tails), ranks that one cut alone puts over the budget
    are rejected without a TT-SVD (as in :func:`allocate_error`)."""
    dims = tt.dims

    def ranks_of(x: int) -> list[int]:
        return minimal_ranks(dims, [min(x, c) for c in caps])

    def fits(r: list[int]) -> bool:
        if bounds is not None and any(b[min(c, len(b) - 1)] > budget
                                      for b, c in zip(bounds, r, strict=True)):
            return False
        return tt.error2(r) <= budget

    lo, hi = 1, max(caps)
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(ranks_of(mid)):
            hi = mid
        else:
            lo = mid + 1
    while lo > 1 and fits(ranks_of(lo - 1)):
        lo -= 1
    return ranks_of(lo)


def allocate_error(tt: TTSVD, caps: Sequence[int], bounds: Sequence[list[float]],
                   budget: float) -> list[int]:
    """Ranks with few parameters whose TT-SVD squared error is at most ``budget``.

    Parameters
    ----------
    tt
        The TT-SVD of the tensor.
    caps
        Largest rank of every bond (``max_bond``, ``keep``, the full bond dimensions).
    bounds
        Squared tails (:func:`tail_squares`) of the original cut spectra, one per bond.
    budget
        Allowed squared error, absolute (``(max_error * ||a||)^2``).

    Returns
    -------
    list of int
        The sequential allocation refined by exact greedy reductions, or the smallest uniform
        rank meeting the budget where that has fewer parameters.
    """
    caps = minimal_ranks(tt.dims, [max(1, int(c)) for c in caps])
    seq = _refine(tt, _sequential(tt, list(caps), list(bounds), budget), budget,
                  bounds=bounds)
    uni = uniform_rank(tt, caps, budget, bounds)
    options = [r for r in (seq, uni) if tt.error2(r) <= budget] or [list(caps)]
    return min(options, key=lambda r: (chain_params(tt.dims, r), tt.error2(r)))


def _end_bases(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left singular vectors of the first unfolding ``(d_0, rest)`` and right singular vectors
    (as columns) of the last one ``(rest, d_{n-1})``, descending; ``a``'s dtype."""
    u = left_singular(a.reshape(a.shape[0], -1))[0]
    v = left_singular(a.reshape(-1, a.shape[-1]).mT)[0]
    return u, v


def _middle_rank(m: torch.Tensor, cap: int, left: float) -> tuple[int, float] | None:
    """Smallest rank (at most ``cap``) of a truncated SVD of ``m`` discarding at most ``left``
    squared weight, and that weight; None if none fits."""
    gram = m @ m.mT if m.shape[0] <= m.shape[1] else m.mT @ m
    tails = tail_squares(torch.linalg.eigvalsh(gram).flip(0).clamp_min(0).sqrt())
    for r in range(1, min(cap, len(tails) - 1) + 1):
        if tails[r] <= left:
            return r, tails[r]
    return None


#: Up to this much work (pairs x Gram flops), :func:`ends_first` tries every pair of end
#: ranks (else a compass search).
_EXHAUSTIVE_FLOPS = 2e9
_Eval = Callable[[int, int], "tuple[int, list[int], float] | None"]


def _pattern_search(evaluate: _Eval, start: tuple[int, int],
                    lows: tuple[int, int]) -> tuple[int, list[int], float] | None:
    """Fewest parameters over the end ranks ``(r0, rL)`` in ``[lows, start]``: compass search
    from ``start`` with steps halved when no neighbour improves (results cached)."""
    seen: dict[tuple[int, int], tuple[int, list[int], float] | None] = {}

    def f(x: tuple[int, int]) -> tuple[int, list[int], float] | None:
        if x not in seen:
            seen[x] = evaluate(*x)
        return seen[x]

    cur, best = start, f(start)
    steps = [max(1, (s - lo) // 4) for s, lo in zip(start, lows, strict=True)]
    while best is not None:
        moves = [(-steps[0], 0), (0, -steps[1]), (-steps[0], -steps[1]), (steps[0], -steps[1]),
                 (-steps[0], steps[1]), (steps[0], 0), (0, steps[1])]
        cands = [(cur[0] + d0, cur[1] + d1) for d0, d1 in moves]
        cands = [c for c in cands if lows[0] <= c[0] <= start[0] and lows[1] <= c[1] <= start[1]]
        found = [(r, c) for c in cands if (r := f(c)) is not None and r[0] < best[0]]
        if found:
            best, cur = min(found, key=lambda t: (t[0][0], t[0][2]))
        elif steps == [1, 1]:
            break
        else:
            steps = [max(1, s // 2) for s in steps]
    return best


def ends_first(a: torch.Tensor, caps: Sequence[int], budget: float, *,
               end_tails: Sequence[list[float]] | None = None) -> tuple[list[int], float]:
    """Ranks of the best "ends first" chain of a 3- or 4-site tensor within ``budget``.

    The end sites are the leading singular vectors of the first and last unfoldings (ranks
    ``r0``, ``rL``); the middle is the projection of ``a`` on them (3 sites), or that split
    by a truncated SVD at the smallest rank meeting the budget (4 sites). Squared errors are
    exact (orthogonal projections). ``(r0, rL)`` come from a compass search for the fewest
    parameters (every pair where there are few). Returns the ranks and their squared error,
    or the caps and ``inf`` where nothing fits or the chain has another length.
    ``end_tails``: the squared tails of the first and last cut spectra where already known.

    Examples
    --------
    >>> a = torch.randn(6, 3, 3, 5, dtype=torch.float64)
    >>> ranks, err2 = ends_first(a, [6, 15, 5], 1e-20)
    >>> ranks, err2 < 1e-20
    ([6, 15, 5], True)
    """
    dims = tuple(int(d) for d in a.shape)
    caps = minimal_ranks(dims, caps)
    if len(dims) not in (3, 4):
        return list(caps), math.inf
    a64 = a.detach().double()
    u, v = _end_bases(a64)
    core = torch.einsum("ia,imj,jb->amb", u, a64.reshape(dims[0], -1, dims[-1]), v)
    # tail[i][j]: weight of the projections on left vectors >= i and right vectors >= j, so
    # the ends drop tail[r0][0] + tail[0][rl] - tail[r0][rl] (sums of squares: no cancellation)
    sq = torch.nn.functional.pad(core.square().sum(1), (0, 1, 0, 1))
    tail = sq.flip((0, 1)).cumsum(0).cumsum(1).flip((0, 1)).tolist()

    def evaluate(r0: int, rl: int) -> tuple[int, list[int], float] | None:
        err2 = max(0.0, tail[r0][0] + tail[0][rl] - tail[r0][rl])
        if err2 > budget:
            return None
        if len(dims) == 3:
            return chain_params(dims, [r0, rl]), [r0, rl], err2
        mid = core[:r0, :, :rl].reshape(r0 * dims[1], dims[2] * rl)
        fit = _middle_rank(mid, caps[1], budget - err2)
        if fit is None:
            return None
        ranks = [r0, fit[0], rl]  # as built (minimal_ranks may cut r0, rL exactly later)
        return chain_params(dims, minimal_ranks(dims, ranks)), ranks, err2 + fit[1]

    tails = end_tails or [tail_squares(torch.linalg.svdvals(a64.reshape(dims[0], -1))),
                          tail_squares(torch.linalg.svdvals(a64.reshape(-1, dims[-1])))]
    lows = tuple(next((r for r in range(1, c + 1) if t[min(r, len(t) - 1)] <= budget), c)
                 for t, c in zip(tails, (caps[0], caps[-1]), strict=True))
    start = (caps[0], caps[-1])
    pairs = (start[0] - lows[0] + 1) * (start[1] - lows[1] + 1)
    side = sorted([start[0] * dims[1], math.prod(dims[2:-1]) * start[1]])
    if pairs * side[0] ** 2 * side[1] <= _EXHAUSTIVE_FLOPS:
        found = [r for r0 in range(lows[0], start[0] + 1) for rl in range(lows[1], start[1] + 1)
                 if (r := evaluate(r0, rl)) is not None]
        best = min(found, key=lambda t: (t[0], t[2])) if found else None
    else:
        best = _pattern_search(evaluate, start, lows)
    return (list(caps), math.inf) if best is None else (best[1], best[2])


def ends_first_cores(a: torch.Tensor, ranks: Sequence[int]) -> list[torch.Tensor]:
    """Cores ``(r_{k-1}, d_k, r_k)`` of the ends-first chain of :func:`ends_first` with these
    ranks, in ``a``'s dtype (differentiable); the first core is left-orthonormal.

    Examples
    --------
    >>> a = torch.randn(4, 3, 3, 5, dtype=torch.float64)
    >>> [tuple(c.shape) for c in ends_first_cores(a, [4, 12, 5])]
    [(1, 4, 4), (4, 3, 12), (12, 3, 5), (5, 5, 1)]
    """
    dims = tuple(int(d) for d in a.shape)
    u, v = _end_bases(a)
    r0, rl = ranks[0], ranks[-1]
    u, v = u[:, :r0], v[:, :rl]
    mid = torch.einsum("ia,imj,jb->amb", u, a.reshape(dims[0], -1, dims[-1]), v)
    first, last = u.reshape(1, dims[0], r0), v.mT.reshape(rl, dims[-1], 1)
    if len(dims) == 3:
        return [first, mid.reshape(r0, dims[1], rl), last]
    w, s, vh = svd(mid.reshape(r0 * dims[1], dims[2] * rl))
    r1 = ranks[1]
    return [first, w[:, :r1].reshape(r0, dims[1], r1),
            (s[:r1, None] * vh[:r1]).reshape(r1, dims[2], rl), last]
