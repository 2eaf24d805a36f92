"""Families of factorizations of one kernel, each option with its cost and error.

A :class:`Family` is one way of factoring one layer's kernel, parameterised by its ranks:

* :class:`SVDFamily`: a two-site cut (``"out,kh|in,kw"``, ...) at rank ``r``; its errors are
  Eckart-Young tails of the cut's spectrum (no decomposition needed);
* :class:`TuckerFamily`: Tucker-2 at ``(r_out, r_in)``; the exact HOSVD error of every rank
  pair from one projected core (``||W - P W Q||^2 = ||W||^2 - ||P W Q||^2``);
* :class:`MPSFamily`: the chain ``"out|kh|kw|in"`` at ``max_bond``; the error is the TT-SVD
  bound ``sqrt(sum_k tail_k^2)`` over the three bonds' unfolding spectra (Oseledets 2011);
* :class:`CPFamily`: CP rank ``R``; errors are ALS fits (slow: only with ``method="cp"``).

Every :class:`Option` carries its parameters (weight and bias), its multiply-adds per image
in the factored forward form (when the input's spatial size is known) and its relative
Frobenius error. Which families a layer gets (``method=``) is decided in :mod:`.candidates`.

A family's :attr:`Family.multiple` (``rank_multiple=`` of :func:`tnconv.compress`) restricts
its ranks to multiples of it (hardware-friendly channel counts, as AIMET and HALOC do), each
leg's full rank aside (a dimension of the kernel, never exceeded): its grid and every option
it makes (:meth:`Family.clip`) have only those ranks, so every allocation chooses among them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..cuts import parse_cut
from ..decomp import left_singular, svdvals, tail_errors
from ..spectra import matricize
from ..vbmf import evbmf

__all__ = ["Option", "Geometry", "Family", "SVDFamily", "TuckerFamily", "MPSFamily",
           "CPFamily", "CHEAP_CUTS", "MPS_CHAIN", "dense_option"]

#: Two-site cuts with a cheap convolution form (``kh x kw`` then ``1x1``, ``1x1`` then
#: ``kh x kw``, ``1 x kw`` then ``kh x 1``, ``kh x 1`` then ``1 x kw``).
CHEAP_CUTS: tuple[str, ...] = ("out|in,kh,kw", "out,kh,kw|in", "out,kh|in,kw", "out,kw|in,kh")
#: The MPS chain of ``method="mps"``.
MPS_CHAIN = "out|kh|kw|in"
_GRID_MAX = 48  # rank values per leg in a Tucker grid (all of them when fewer)


@dataclass(frozen=True)
class Geometry:
    """Spatial sizes of one convolution at the compression's ``input_size``.

    ``h, w``: the input's height and width; ``ho, wo``: the output's.
    """

    h: int
    w: int
    ho: int
    wo: int


@dataclass(frozen=True)
class Option:
    """One choice for one layer.

    Attributes
    ----------
    method
        ``"dense"``, ``"svd"``, ``"tucker"``, ``"mps"`` or ``"cp"``.
    cut
        The cut (svd) or chain (mps); ``None`` otherwise.
    ranks
        svd ``(r,)``, tucker ``(r_out, r_in)``, mps the bond dimensions, cp ``(R,)``.
    params
        Parameters of the layer with this option (factors and bias).
    flops
        Multiply-adds per image of its forward form (``None`` without a geometry).
    error
        Relative Frobenius error of the kernel (mps: the TT-SVD upper bound); for
        ``fit="data"``, the relative error of the layer's response on the data.
    fit
        ``"weights"``: the factors approximate the kernel; ``"data"``: they approximate the
        layer's output on data (:mod:`tnconv.compression.datafit`).
    basis
        ``fit="data"``: the ``out x r`` orthonormal output basis ``U`` (the kernel becomes
        ``U U^T W``); ``None`` otherwise. Not part of equality.
    """

    method: str
    cut: str | None
    ranks: tuple[int, ...]
    params: int
    flops: int | None
    error: float
    fit: str = "weights"
    basis: Any = field(default=None, compare=False, repr=False)

    def cost(self, kind: str) -> float:
        """``params`` or ``flops`` (``kind``)."""
        value = self.params if kind == "params" else self.flops
        return float("nan") if value is None else float(value)

    @property
    def key(self) -> str:
        """The family it belongs to, as :attr:`Family.key` (``"dense"`` for dense)."""
        return _key(self.method, self.cut, self.fit)


def _key(method: str, cut: str | None, fit: str) -> str:
    return method + (f" {cut}" if method == "svd" else "") + (" (data)" if fit == "data" else "")


def _conv_flops(shape: tuple[int, ...], geom: Geometry | None) -> int | None:
    o, i, kh, kw = shape
    return None if geom is None else geom.ho * geom.wo * o * i * kh * kw


def dense_option(shape: tuple[int, ...], bias: int, geom: Geometry | None) -> Option:
    """The layer left as it is: its parameters (weight and bias) and multiply-adds per image.

    Examples
    --------
    >>> dense_option((8, 4, 3, 3), 8, Geometry(10, 10, 8, 8))
    Option(method='dense', cut=None, ranks=(), params=296, flops=18432, error=0.0, fit='weights')
    """
    return Option("dense", None, (), math.prod(shape) + bias, _conv_flops(shape, geom), 0.0)


@dataclass
class Family:
    """One factorization of one kernel, as a function of its ranks (a base class)."""

    weight: torch.Tensor
    bias: int
    geom: Geometry | None
    method: str = ""
    cut: str | None = None
    full: tuple[int, ...] = ()
    _cache: dict[tuple[int, ...], Option] = field(default_factory=dict, repr=False)
    fit: str = "weights"
    multiple: int = 1
    #: Whether a leg's full rank is a rank of its own when it is not a multiple (it is a
    #: dimension of the kernel; CP's "full" rank is only a size bound, so not there).
    full_allowed = True

    @property
    def key(self) -> str:
        """``"svd out,kh|in,kw"``, ``"tucker"``, ``"svd out|in,kh,kw (data)"``, ..."""
        return _key(self.method, self.cut, self.fit)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.weight.shape)  # type: ignore[return-value]

    def set_multiple(self, multiple: int) -> Family:
        """Restrict the ranks to multiples of ``multiple`` (module docstring); returns self.

        >>> import torch
        >>> fam = SVDFamily(torch.randn(20, 30, 1, 1), 0, None, "out|in,kh,kw")
        >>> [o.ranks[0] for o in fam.set_multiple(8).grid()], fam.clip((13,))
        ([8, 16, 20], (8,))
        """
        if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
            raise ValueError(f"rank multiple must be an int >= 1, got {multiple!r}")
        self.multiple = multiple
        self._cache.clear()
        return self

    def axis_ranks(self, axis: int) -> list[int]:
        """Every rank leg ``axis`` may take: ``1 .. full``, or the multiples of
        :attr:`multiple` up to ``full`` and ``full`` itself (``[full]`` when ``full`` is
        smaller than the multiple)."""
        full, m = self.full[axis], self.multiple
        if m == 1:
            return list(range(1, full + 1))
        if full < m:
            return [full]
        ranks = list(range(m, full + 1, m))
        return [*ranks, full] if self.full_allowed and ranks[-1] != full else ranks

    def clip(self, ranks: tuple[int, ...]) -> tuple[int, ...]:
        """Ranks within ``1 .. full``, each rounded down to a rank of :meth:`axis_ranks` (up
        to its smallest, below that)."""
        out = []
        for r, f in zip(ranks, self.full, strict=True):
            r, m = max(1, min(int(r), f)), self.multiple
            if m > 1 and not (r == f and self.full_allowed):
                r = f if f < m else max(m, r // m * m)
            out.append(r)
        return tuple(out)

    def option(self, ranks: tuple[int, ...]) -> Option:
        """The option at ``ranks`` (clipped), with its error."""
        ranks = self.clip(ranks)
        if ranks not in self._cache:
            params, flops = self.costs(ranks)
            self._cache[ranks] = Option(self.method, self.cut, self.stored_ranks(ranks),
                                        params + self.bias, flops, self.error(ranks), self.fit,
                                        self.basis(ranks))
        return self._cache[ranks]

    def basis(self, ranks: tuple[int, ...]) -> Any:
        """The data fit's output basis at ``ranks`` (``None``: a fit of the weights)."""
        return None

    def stored_ranks(self, ranks: tuple[int, ...]) -> tuple[int, ...]:
        return ranks

    def grid(self) -> list[Option]:
        """Options at the family's rank grid (every rank where that is affordable)."""
        return [self.option((r,)) for r in self.axis_ranks(0)]

    def costs(self, ranks: tuple[int, ...]) -> tuple[int, int | None]:
        """Factor parameters (without bias) and multiply-adds per image at ``ranks``."""
        raise NotImplementedError

    def error(self, ranks: tuple[int, ...]) -> float:
        raise NotImplementedError

    def vbmf_ranks(self) -> tuple[int, ...]:
        """The EVBMF ranks of the family's matrices (at least 1)."""
        raise NotImplementedError

    def area(self, kind: str) -> float:
        """Mean over budget fractions ``f`` in (0, 1] of the smallest error within ``f``.

        The family's "error per parameter" (or per FLOP): smaller is better.
        """
        dense = dense_option(self.shape, self.bias, self.geom).cost(kind)
        pts = sorted((o.cost(kind) / dense, o.error) for o in self.grid())
        total, best, prev = 0.0, 1.0, 0.0
        for frac, err in pts:
            if frac >= 1.0:
                break
            total += (frac - prev) * best
            best, prev = min(best, err), frac
        return total + (1.0 - prev) * best


def _sizes(shape: tuple[int, ...]) -> dict[str, int]:
    return dict(zip(("out", "in", "kh", "kw"), shape, strict=True))


class SVDFamily(Family):
    """A two-site cut at rank ``r``: the truncated SVD of the cut's matrix.

    Its errors are the Eckart-Young tails of the cut's singular values.

    Examples
    --------
    >>> import torch
    >>> w = torch.diag(torch.tensor([4.0, 3.0, 0.0, 0.0]))[:, :, None, None]
    >>> fam = SVDFamily(w, 0, None, "out|in,kh,kw")
    >>> opt = fam.option((2,))
    >>> opt.params, opt.error, fam.option((1,)).error
    (16, 0.0, 0.6)
    """

    def __init__(self, weight: torch.Tensor, bias: int, geom: Geometry | None, cut: str) -> None:
        left, right = parse_cut(cut, ("out", "in", "kh", "kw"), max_groups=2)
        super().__init__(weight, bias, geom, "svd", "|".join(",".join(g) for g in (left, right)))
        size = _sizes(self.shape)
        self.rows, self.cols = math.prod(size[n] for n in left), math.prod(size[n] for n in right)
        self.groups = (frozenset(left), frozenset(right))
        self.full = (min(self.rows, self.cols),)
        self.matrix = matricize(weight.detach(), self.cut, dtype=torch.float64)[0]
        self.tails = tail_errors(svdvals(self.matrix)).cpu()

    def costs(self, ranks: tuple[int, ...]) -> tuple[int, int | None]:
        r = ranks[0]
        return r * (self.rows + self.cols), self._flops(r)

    def _flops(self, r: int) -> int | None:
        g = self.geom
        if g is None:
            return None
        o, i, kh, kw = self.shape
        left, _ = self.groups
        if left == {"out"}:  # kh x kw conv to r, then 1x1
            return g.ho * g.wo * r * (i * kh * kw + o)
        if left == {"out", "kh", "kw"}:  # 1x1 to r, then kh x kw
            return g.h * g.w * i * r + g.ho * g.wo * r * o * kh * kw
        if left == {"out", "kh"}:  # 1 x kw to r, then kh x 1
            return g.h * g.wo * i * kw * r + g.ho * g.wo * r * kh * o
        if left == {"out", "kw"}:  # kh x 1 to r, then 1 x kw
            return g.ho * g.w * i * kh * r + g.ho * g.wo * r * kw * o
        # no convolution form: the dense kernel is rebuilt, then one convolution
        return g.ho * g.wo * o * i * kh * kw + r * self.rows * self.cols

    def error(self, ranks: tuple[int, ...]) -> float:
        return float(self.tails[ranks[0]])

    def vbmf_ranks(self) -> tuple[int, ...]:
        return (max(1, evbmf(self.matrix).rank) if min(self.matrix.shape) > 1 else 1,)


class TuckerFamily(Family):
    """Tucker-2 ``(r_out, r_in)``: exact HOSVD errors of every rank pair."""

    def __init__(self, weight: torch.Tensor, bias: int, geom: Geometry | None) -> None:
        super().__init__(weight, bias, geom, "tucker", None)
        w = weight.detach().to(torch.float64)
        self.unfoldings = [w.movedim(a, 0).reshape(w.shape[a], -1) for a in (0, 1)]
        (u_out, _), (u_in, _) = (left_singular(m) for m in self.unfoldings)
        core = torch.einsum("oihw,oa,ib->abhw", w, u_out.double(), u_in.double())
        energy = core.square().sum((2, 3))
        self.kept = energy.cumsum(0).cumsum(1).cpu()  # kept[a-1, b-1] = ||core[:a, :b]||^2
        self.total = float(w.square().sum())
        self.full = (int(u_out.shape[1]), int(u_in.shape[1]))

    def costs(self, ranks: tuple[int, ...]) -> tuple[int, int | None]:
        a, b = ranks
        o, i, kh, kw = self.shape
        g = self.geom
        flops = None if g is None else (g.h * g.w * i * b + g.ho * g.wo * (a * b * kh * kw + o * a))
        return o * a + a * b * kh * kw + i * b, flops

    def error(self, ranks: tuple[int, ...]) -> float:
        if self.total == 0.0:
            return 0.0
        kept = float(self.kept[ranks[0] - 1, ranks[1] - 1])
        return math.sqrt(max(self.total - kept, 0.0) / self.total)

    def grid(self) -> list[Option]:
        axes = [_rank_axis(self.axis_ranks(k)) for k in range(len(self.full))]
        return [self.option((a, b)) for a in axes[0] for b in axes[1]]

    def vbmf_ranks(self) -> tuple[int, ...]:
        return tuple(max(1, evbmf(m).rank) if min(m.shape) > 1 else 1 for m in self.unfoldings)


def _rank_axis(ranks: list[int]) -> list[int]:
    """Every rank of ``ranks`` (ascending) when few, else about ``_GRID_MAX`` spread ones."""
    n = len(ranks)
    if n <= _GRID_MAX:
        return ranks
    return sorted({ranks[max(1, round(n * k / _GRID_MAX)) - 1] for k in range(1, _GRID_MAX + 1)})


class MPSFamily(Family):
    """The chain ``out|kh|kw|in`` at one ``max_bond``; the error is the TT-SVD bound."""

    def __init__(self, weight: torch.Tensor, bias: int, geom: Geometry | None) -> None:
        super().__init__(weight, bias, geom, "mps", MPS_CHAIN)
        o, i, kh, kw = self.shape
        self.bonds = (min(o, i * kh * kw), min(o * kh, kw * i), min(o * kh * kw, i))
        cuts = ("out|in,kh,kw", "out,kh|in,kw", "out,kh,kw|in")
        self.matrices = [matricize(weight.detach(), c, dtype=torch.float64)[0] for c in cuts]
        self.tails = [tail_errors(svdvals(m)).cpu() for m in self.matrices]
        self.full = (max(self.bonds),)

    def stored_ranks(self, ranks: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(min(ranks[0], b) for b in self.bonds)

    def costs(self, ranks: tuple[int, ...]) -> tuple[int, int | None]:
        b1, b2, b3 = self.stored_ranks(ranks)
        o, i, kh, kw = self.shape
        g = self.geom
        flops = None if g is None else (g.h * g.w * i * b3 + g.h * g.wo * b3 * b2 * kw
                                        + g.ho * g.wo * (b2 * b1 * kh + b1 * o))
        return o * b1 + b1 * kh * b2 + b2 * kw * b3 + b3 * i, flops

    def error(self, ranks: tuple[int, ...]) -> float:
        bonds = self.stored_ranks(ranks)
        return math.sqrt(sum(float(t[b]) ** 2 for t, b in zip(self.tails, bonds, strict=True)))

    def vbmf_ranks(self) -> tuple[int, ...]:
        return (max(max(1, evbmf(m).rank) if min(m.shape) > 1 else 1 for m in self.matrices),)


class CPFamily(Family):
    """CP rank ``R`` fitted by ALS (a geometric grid of ranks; every fit is cached)."""

    full_allowed = False

    def __init__(self, weight: torch.Tensor, bias: int, geom: Geometry | None,
                 n_iter: int = 25) -> None:
        super().__init__(weight, bias, geom, "cp", None)
        o, i, kh, kw = self.shape
        self.full = (max(1, (o * i * kh * kw) // (o + i + kh + kw)),)
        self.n_iter = n_iter

    def costs(self, ranks: tuple[int, ...]) -> tuple[int, int | None]:
        r = ranks[0]
        o, i, kh, kw = self.shape
        g = self.geom
        flops = None if g is None else (g.h * g.w * i * r + g.h * g.wo * r * kw
                                        + g.ho * g.wo * r * (kh + o))
        return r * (o + i + kh + kw), flops

    def error(self, ranks: tuple[int, ...]) -> float:
        from ..cp import to_cp

        return float(to_cp(self.weight.detach(), rank=ranks[0], n_iter=self.n_iter).rel_error)

    def grid(self) -> list[Option]:
        n = self.full[0]
        ranks = sorted({self.clip((max(1, round(n ** (k / 7))),))[0] for k in range(8)})
        return [self.option((r,)) for r in ranks]

    def vbmf_ranks(self) -> tuple[int, ...]:
        w = self.weight.detach().to(torch.float64)
        mats = [w.movedim(a, 0).reshape(w.shape[a], -1) for a in (0, 1)]
        return (max(max(1, evbmf(m).rank) if min(m.shape) > 1 else 1 for m in mats),)
