"""Array-level decompositions: no legs, no labels, only matrices and spectra.

Every module of tnconv that decomposes something (spectra, truncation, the MPS / Tucker / CP
decompositions, the atlas, the retraining projection) goes through this module, so each
numerical rule is written once (quimb keeps ``decomp.py`` apart from ``tensor_core.py`` in
the same way):

* **one SVD routine** (:func:`svd`, :func:`svdvals`, :func:`left_singular`): computed on the
  tall orientation (LAPACK and cuSOLVER are several times slower on wide matrices);
  singular values of float32 (and half) matrices go through the **float64 Gram matrix** and
  ``eigvalsh``, which is several times faster than an SVD and accurate to about
  ``1e-8 * s_max`` (a float32 SVD gives about ``1e-7 * s_max`` on the CPU and was measured at
  ``2.5e-4 * s_max`` with cuSOLVER's batched float32 SVD on an H200); float64 matrices keep the
  SVD. Stacks of matrices are one batched call on the GPU and a loop on the CPU, where torch's
  batched LAPACK path was measured 40x slower than a loop;
* **tails**: :func:`tail_errors` (relative error of every rank), :func:`norm_loss`,
  :func:`rank_for_error`;
* **one set of truncation criteria**, :class:`Criteria` (``max_bond``, ``keep``,
  ``max_error``, ``cutoff``, ``cutoff_mode``, quimb's vocabulary), which validates itself when
  built and answers :meth:`Criteria.rank`.

How the criteria combine: each gives a rank; the kept rank is the **smallest** of them (the
most restrictive wins), and never below 1. ``max_bond`` caps the rank; ``keep`` keeps
``ceil(keep * full_rank)`` values; ``max_error`` keeps the smallest rank whose relative error
``||W - W_r||_F / ||W||_F`` is at most ``max_error``; ``cutoff`` with ``cutoff_mode``
(``"rel"``: drop values ``<= cutoff * s_max``; ``"abs"``: ``<= cutoff``; ``"rsum2"``/``"sum2"``:
drop the longest tail whose sum of squares is ``<= cutoff``, relative to the total for
``rsum2``; ``"rsum1"``/``"sum1"`` the same with plain sums).
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

import torch

__all__ = [
    "CUTOFF_MODES",
    "Criteria",
    "CriteriaOptions",
    "check_max_error",
    "check_positive_int",
    "check_ratio",
    "check_spectrum",
    "frobenius_norm",
    "left_singular",
    "norm_loss",
    "rank_for_error",
    "svd",
    "svdvals",
    "tail_errors",
]

#: Valid ``cutoff_mode`` values (quimb's names).
CUTOFF_MODES: tuple[str, ...] = ("rel", "abs", "rsum2", "sum2", "rsum1", "sum1")
_TOL = 1 + 1e-12  # float64 slack when comparing an error with its target


# -- validation -------------------------------------------------------------------------------


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_max_error(max_error: object, name: str = "max_error") -> float:
    """Validate a relative-error target in ``[0, 1)``.

    Examples
    --------
    >>> check_max_error(0.1)
    0.1
    """
    if not _is_number(max_error):
        raise TypeError(f"{name} must be a number in [0, 1), got {max_error!r}")
    if not 0 <= max_error < 1:
        raise ValueError(f"{name} must be in [0, 1), got {max_error}")
    return float(max_error)


def check_positive_int(name: str, value: object) -> int:
    """Validate an int ``>= 1`` (bools rejected).

    Examples
    --------
    >>> check_positive_int("max_bond", 4)
    4
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def check_ratio(ratio: object) -> float | None:
    """Validate a compression ratio ``dense / factored`` parameters: None or a number > 1.

    Examples
    --------
    >>> check_ratio(4)
    4.0
    """
    if ratio is None:
        return None
    if not _is_number(ratio):
        raise TypeError(f"ratio must be a finite number > 1, got {ratio!r}")
    if not math.isfinite(ratio):
        raise ValueError(f"ratio must be a finite number > 1, got {ratio}")
    if ratio <= 1:
        raise ValueError(f"ratio must be > 1 (dense / factored parameters), got {ratio}")
    return float(ratio)


def check_spectrum(s: object, name: str = "s", *, descending: bool = False) -> torch.Tensor:
    """Validate singular values: a non-empty 1-D floating tensor, finite and non-negative.

    With ``descending=True`` the values must also be sorted largest first (as
    :func:`svdvals` returns them; a slack of ``1e-6 * max(s)`` absorbs rounding): the
    functions that read ranks off a spectrum need that order.

    Examples
    --------
    >>> check_spectrum(torch.tensor([2.0, 1.0]), descending=True).tolist()
    [2.0, 1.0]
    """
    if not isinstance(s, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of singular values, got {type(s).__name__}")
    if s.ndim != 1 or s.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D tensor, got shape {tuple(s.shape)}")
    if not s.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {s.dtype}")
    if bool((s < 0).any()) or not bool(torch.isfinite(s).all()):
        raise ValueError(f"{name} must hold finite, non-negative singular values")
    if descending and s.numel() > 1:
        s64 = s.detach().to(torch.float64)
        if bool((s64[1:] - s64[:-1] > 1e-6 * s64.max()).any()):
            raise ValueError(f"{name} must be sorted in descending order (largest first), "
                             f"got {s.tolist()[:8]}{' ...' if s.numel() > 8 else ''}")
    return s


def frobenius_norm(t: torch.Tensor) -> float:
    """``||t||_F`` in float64, scaled by ``max |t|`` first: no overflow of the squares.

    Examples
    --------
    >>> f"{frobenius_norm(torch.tensor([3e200, 4e200], dtype=torch.float64)):.3g}"
    '5e+200'
    """
    t64 = t.detach().to(torch.float64)
    top = float(t64.abs().max()) if t64.numel() else 0.0
    if top == 0.0 or not math.isfinite(top):
        return top
    return top * float((t64 / top).norm())


def _scaled(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``s / max(s)`` in float64 (along the last dimension) and that max (1 where it is 0).

    Squares of the scaled values cannot overflow (float64 squares do above ``~1e154``).
    """
    s64 = s.detach().to(torch.float64)
    top = s64.amax(-1, keepdim=True)
    top = torch.where(top > 0, top, torch.ones_like(top))
    return s64 / top, top


# -- singular values and vectors --------------------------------------------------------------


def svd(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD ``m = u @ diag(s) @ vh``, computed on the tall orientation.

    Parameters
    ----------
    m
        A ``rows x cols`` matrix (or a stack of them), float32 or float64.

    Returns
    -------
    u, s, vh
        ``[rows, k]``, ``[k]`` descending, ``[k, cols]`` with ``k = min(rows, cols)``, in ``m``'s
        dtype and device.

    Examples
    --------
    >>> m = torch.randn(3, 5, dtype=torch.float64)
    >>> u, s, vh = svd(m)
    >>> torch.allclose((u * s) @ vh, m)
    True
    """
    if m.shape[-2] >= m.shape[-1]:
        return torch.linalg.svd(m, full_matrices=False)
    v, s, uh = torch.linalg.svd(m.mT, full_matrices=False)
    return uh.mT, s, v.mT


def _gram_svdvals(m: torch.Tensor) -> torch.Tensor:
    m64 = m.double()
    gram = m64.mT @ m64 if m.shape[-2] >= m.shape[-1] else m64 @ m64.mT
    return torch.linalg.eigvalsh(gram).clamp_min(0).sqrt().flip(-1).to(m.dtype)


def svdvals(m: torch.Tensor) -> torch.Tensor:
    """Singular values, descending, of a matrix or a stack of matrices of one shape.

    float64 input keeps an SVD; anything else goes through the float64 Gram matrix of the
    small side and ``eigvalsh`` (accurate to about ``1e-8 * s_max``, better than a float32 SVD,
    and several times faster). A stack is one batched call on the GPU and a loop on the CPU.

    Returns
    -------
    torch.Tensor
        ``[..., min(rows, cols)]`` in ``m``'s dtype and device.

    Examples
    --------
    >>> svdvals(torch.tensor([[3.0, 0.0], [0.0, 4.0]])).tolist()
    [4.0, 3.0]
    """
    if m.ndim > 2 and m.device.type == "cpu":
        flat = m.reshape(-1, *m.shape[-2:])
        return torch.stack([svdvals(x) for x in flat]).reshape(*m.shape[:-2], -1)
    if m.dtype == torch.float64:
        return torch.linalg.svdvals(m if m.shape[-2] >= m.shape[-1] else m.mT)
    return _gram_svdvals(m)


def left_singular(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left singular vectors and values of a matrix (``u`` is ``[rows, min(rows, cols)]``).

    A wide matrix uses the eigenvectors of its ``rows x rows`` Gram matrix (much cheaper than
    its SVD; computed in float64, so ``u`` is orthonormal and the squared spectrum keeps
    ``1e-8`` relative accuracy); a tall one its thin SVD. Results are in ``m``'s dtype.

    Examples
    --------
    >>> u, s = left_singular(torch.randn(3, 40, dtype=torch.float64))
    >>> tuple(u.shape), bool(torch.allclose(u.T @ u, torch.eye(3, dtype=torch.float64)))
    ((3, 3), True)
    """
    if m.shape[0] <= m.shape[1]:
        m64 = m.double()
        top = float(m64.abs().max()) if m64.numel() else 0.0
        top = top if 0.0 < top < math.inf else 1.0
        m64 = m64 / top  # no overflow in the Gram matrix
        evals, u = torch.linalg.eigh(m64 @ m64.T)
        return u.flip(1).to(m.dtype), (evals.flip(0).clamp_min(0).sqrt() * top).to(m.dtype)
    u, s, _ = torch.linalg.svd(m, full_matrices=False)
    return u, s


# -- tails ------------------------------------------------------------------------------------


def tail_errors(s: torch.Tensor) -> torch.Tensor:
    """Relative Frobenius errors ``e(r)`` for every kept rank ``r = 0 .. len(s)``.

    Computed in float64 from tail sums (no cancellation); the last entry is 0. Works on the
    last dimension of a stack too.

    Examples
    --------
    >>> tail_errors(torch.tensor([4.0, 3.0])).tolist()
    [1.0, 0.6, 0.0]
    """
    sq = _scaled(s)[0] ** 2
    tails = torch.flip(torch.cumsum(torch.flip(sq, (-1,)), -1), (-1,))
    tails = torch.cat([tails, torch.zeros_like(tails[..., :1])], -1)
    total = tails[..., :1]
    return torch.sqrt(tails / torch.where(total > 0, total, torch.ones_like(total)))


def norm_loss(s: torch.Tensor, rank: int) -> float:
    """``1 - ||W_r|| / ||W||`` when the ``rank`` largest of the singular values ``s`` are kept.

    Examples
    --------
    >>> norm_loss(torch.tensor([4.0, 3.0]), 1)
    0.19999999999999996
    """
    s = check_spectrum(s, descending=True)
    if isinstance(rank, bool) or not hasattr(rank, "__index__"):
        raise TypeError(f"rank must be an int, got {rank!r}")
    rank = operator.index(rank)
    if not 0 <= rank <= s.numel():
        raise ValueError(f"rank must be in 0..{s.numel()}, got {rank}")
    sq = _scaled(s)[0] ** 2
    total = float(sq.sum())
    return 1.0 - math.sqrt(float(sq[:rank].sum()) / total) if total > 0 else 0.0


def _first_rank_within(err: torch.Tensor, target: float) -> int | None:
    ok = torch.nonzero(err <= target * _TOL)
    return int(ok[0, 0]) if ok.numel() else None


def rank_for_error(s: torch.Tensor, max_error: float, *, norm: float | None = None) -> int:
    """Smallest rank whose relative Frobenius error is at most ``max_error``.

    Parameters
    ----------
    s
        Singular values, descending.
    max_error
        Allowed relative error ``||W - W_r||_F / ||W||_F``, in ``[0, 1)``.
    norm
        Reference norm ``||W||`` (default: the norm of ``s``); the MPS and Tucker
        decompositions pass the whole kernel's norm so that per-bond errors add up.

    Returns
    -------
    int
        Between 0 (only for an all-zero spectrum) and ``len(s)``.

    Examples
    --------
    >>> rank_for_error(torch.tensor([4.0, 3.0]), 0.6), rank_for_error(torch.tensor([4.0, 3.0]), 0.5)
    (1, 2)
    """
    s = check_spectrum(s, descending=True)
    check_max_error(max_error)
    scaled, top = _scaled(s)
    norm_s = float(top) * math.sqrt(float((scaled * scaled).sum()))  # ||s||, no overflow
    ref = norm_s if norm is None else float(norm)
    if norm_s == 0.0 or ref == 0.0:
        return 0
    err = tail_errors(s) * (norm_s / ref)
    found = _first_rank_within(err, max_error)
    return s.numel() if found is None else max(1, found)


def _cutoff_rank(s: torch.Tensor, cutoff: float, mode: str) -> int:
    s64 = s.to(torch.float64)
    if mode in ("rel", "abs"):
        thresh = cutoff * float(s64[0]) if mode == "rel" else cutoff
        return int((s64 > thresh).sum())
    scaled, top = _scaled(s)  # sums of squares without overflow
    power = 2 if mode.endswith("2") else 1
    vals = scaled**power
    tails = torch.flip(torch.cumsum(torch.flip(vals, (0,)), 0), (0,))
    tails = torch.cat([tails, tails.new_zeros(1)])
    t = float(top)
    limit = (cutoff * float(tails[0]) if mode.startswith("r")
             else cutoff / t / (t if power == 2 else 1.0))
    found = _first_rank_within(tails, limit)
    return s64.numel() if found is None else found


# -- criteria ---------------------------------------------------------------------------------


class CriteriaOptions(TypedDict, total=False):
    """The truncation criteria as keyword arguments (``**criteria: Unpack[CriteriaOptions]``).

    The public decompositions (:func:`tnconv.truncate`, :func:`tnconv.to_mps`,
    :func:`tnconv.to_tucker`) take these keywords, quimb's vocabulary, and turn them into one
    :class:`Criteria` at the boundary with :meth:`Criteria.from_options`.
    """

    max_bond: int | None
    keep: float | None
    max_error: float | None
    cutoff: float | None
    cutoff_mode: str | None


@dataclass(frozen=True)
class Criteria:
    """Truncation criteria, validated when built (see the module docstring for how they combine).

    Parameters
    ----------
    max_bond
        At most this many singular values (an int >= 1).
    keep
        Fraction of singular values kept, in ``(0, 1]``: ``ceil(keep * full_rank)``.
    max_error
        Largest relative error ``||W - W_r||_F / ||W||_F``, in ``[0, 1)``.
    cutoff, cutoff_mode
        quimb's cutoff and its mode (one of :data:`CUTOFF_MODES`, default ``"rel"``).

    Examples
    --------
    >>> c = Criteria(keep=0.5, max_error=0.3)
    >>> c.rank(torch.tensor([4.0, 2.0, 1.0, 0.5]))
    2
    >>> Criteria().active
    False
    """

    max_bond: int | None = None
    keep: float | None = None
    max_error: float | None = None
    cutoff: float | None = None
    cutoff_mode: str | None = None

    def __post_init__(self) -> None:
        if self.max_bond is not None:
            check_positive_int("max_bond", self.max_bond)
        if self.keep is not None:
            if not _is_number(self.keep):
                raise TypeError(f"keep must be a fraction in (0, 1], got {self.keep!r}")
            if not 0 < self.keep <= 1:
                raise ValueError(f"keep must be a fraction in (0, 1], got {self.keep}")
        if self.max_error is not None:
            check_max_error(self.max_error)
        if self.cutoff is not None:
            if not _is_number(self.cutoff):
                raise TypeError(f"cutoff must be a number >= 0, got {self.cutoff!r}")
            if self.cutoff < 0 or not math.isfinite(self.cutoff):
                raise ValueError(f"cutoff must be a finite number >= 0, got {self.cutoff}")
        if self.cutoff_mode is not None:
            if self.cutoff is None:
                raise ValueError(
                    f"cutoff_mode={self.cutoff_mode!r} was given without cutoff; pass cutoff=... "
                    "too (or use max_error for a relative-error target)")
            if self.cutoff_mode not in CUTOFF_MODES:
                raise ValueError(f"unknown cutoff_mode {self.cutoff_mode!r}; valid: "
                                 f"{', '.join(CUTOFF_MODES)}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> Criteria:
        """Criteria from a mapping; unknown keys raise ``ValueError`` listing the valid ones.

        Examples
        --------
        >>> Criteria.from_mapping({"keep": 0.5}).keep
        0.5
        """
        names = [f.name for f in dataclasses.fields(cls)]
        mapping = dict(mapping or {})
        bad = [k for k in mapping if k not in names]
        if bad:
            raise ValueError(f"unknown truncation criteria {bad}; valid: {', '.join(names)}")
        return cls(**mapping)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Criteria:
        """Criteria from a function's ``**criteria`` keywords; another keyword is a TypeError.

        Examples
        --------
        >>> Criteria.from_options({"max_bond": 4}).max_bond
        4
        """
        names = [f.name for f in dataclasses.fields(cls)]
        bad = [k for k in options if k not in names]
        if bad:
            raise TypeError(f"unexpected keyword argument(s) {', '.join(map(repr, bad))}; the "
                            f"truncation criteria are: {', '.join(names)}")
        return cls(**options)

    @property
    def active(self) -> bool:
        """True when any criterion is set (with none, nothing is truncated)."""
        return any(v is not None for v in (self.max_bond, self.keep, self.max_error, self.cutoff))

    def replace(self, **changes: Any) -> Criteria:
        """A copy with some criteria changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The criteria that are set, as keyword arguments."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def rank(self, s: torch.Tensor, *, norm: float | None = None,
             full_rank: int | None = None) -> int:
        """The rank these criteria keep of the descending spectrum ``s`` (at least 1).

        Parameters
        ----------
        s
            Singular values, descending.
        norm
            Reference norm for ``max_error`` (default: the norm of ``s``).
        full_rank
            What ``keep`` is a fraction of (default ``len(s)``).
        """
        n = int(s.numel())
        rank = n
        if self.max_bond is not None:
            rank = min(rank, self.max_bond)
        if self.keep is not None:
            rank = min(rank, math.ceil(self.keep * (n if full_rank is None else full_rank) - 1e-9))
        if self.max_error is not None:
            r = rank_for_error(s, self.max_error, norm=norm)
            if r > 0 or norm is not None:  # an all-zero spectrum alone sets no rank
                rank = min(rank, r)
        if self.cutoff is not None:
            rank = min(rank, _cutoff_rank(s, self.cutoff, self.cutoff_mode or "rel"))
        return max(1, rank)
