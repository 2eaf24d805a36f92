"""Tucker-2 convolutions: a core on the spatial legs, one factor matrix per channel leg.

The kernel ``W[out, in, kh, kw]`` is written as::

    W[o, i, h, w] = sum_{a, b} U_out[o, a] * G[a, b, h, w] * U_in[i, b]

with ranks ``a < r_out``, ``b < r_in`` (the labelled network ``out-r_out-core-r_in-in``).
The factors come from a truncated HOSVD of the ``out`` and ``in`` legs; the truncation
criteria are those of :mod:`tnconv.truncate`, applied per leg. Applied as convolutions, the
layer is ``1x1 (in -> r_in)``, ``kh x kw (r_in -> r_out)``, ``1x1 (r_out -> out)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..truncate import _check_criteria, choose_rank
from .base import (
    FactorStep,
    _check_positive_int,
    _check_ratio,
    _FactorizedConv2d,
    conv_hyperparameters,
)

__all__ = ["TuckerConv2d", "tucker2"]

_INDS = (("out", "r_out"), ("r_out", "r_in", "kh", "kw"), ("in", "r_in"))
_LEGS = ("out", "in", "kh", "kw")


def _leg_svd(w: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left singular vectors and values of the unfolding of ``w`` along ``axis``."""
    m = w.movedim(axis, 0).reshape(w.shape[axis], -1)
    if m.shape[0] <= m.shape[1]:
        # wide unfolding: the eigenvectors of the small Gram matrix are the left singular
        # vectors (cheaper than an SVD of the wide matrix; float64, so the squared
        # spectrum keeps 1e-8 relative accuracy, and U stays exactly orthonormal)
        evals, u = torch.linalg.eigh(m @ m.T)
        evals, u = evals.flip(0), u.flip(1)
        return u, evals.clamp_min(0).sqrt()
    u, s, _ = torch.linalg.svd(m, full_matrices=False)
    return u, s


def _tucker_params(shape: tuple[int, ...], r_out: int, r_in: int) -> int:
    o, i, kh, kw = shape
    return o * r_out + r_out * r_in * kh * kw + i * r_in


def _ranks_for_ratio(
    shape: tuple[int, ...], full: tuple[int, int], ratio: float
) -> tuple[int, int]:
    """Largest ranks, in the proportion of the full ranks, within ``dense / ratio`` params."""
    budget = math.prod(shape) / ratio
    lo, hi = 0.0, 1.0
    for _ in range(50):
        f = (lo + hi) / 2
        r = (max(1, math.ceil(f * full[0])), max(1, math.ceil(f * full[1])))
        if _tucker_params(shape, *r) <= budget:
            lo = f
        else:
            hi = f
    return max(1, math.ceil(lo * full[0])), max(1, math.ceil(lo * full[1]))


def tucker2(
    kernel: torch.Tensor,
    *,
    ranks: int | tuple[int, int] | None = None,
    max_bond: int | None = None,
    keep: float | None = None,
    max_error: float | None = None,
    cutoff: float | None = None,
    cutoff_mode: str | None = None,
    ratio: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tucker-2 decomposition of a Conv2d kernel by truncated HOSVD of its channel legs.

    Parameters
    ----------
    kernel
        ``[out, in, kh, kw]`` (not modified).
    ranks
        ``(r_out, r_in)`` or one int for both; capped at the legs' full ranks.
    max_bond, keep, cutoff, cutoff_mode
        Per-leg criteria on the spectrum of each channel leg (as in :mod:`tnconv.truncate`);
        the smallest rank any of them gives is kept.
    max_error
        Bound on the relative error of the whole kernel: each leg discards at most
        ``max_error / sqrt(2)`` (the HOSVD bound then gives ``||W - W_t|| <= max_error ||W||``).
    ratio
        Target compression ``dense / factored`` parameters: the largest ranks (proportional
        to the full ranks) within that budget.

    Returns
    -------
    (U_out, core, U_in)
        ``[out, r_out]``, ``[r_out, r_in, kh, kw]``, ``[in, r_in]`` in the kernel's dtype and
        device (computed in float64). With no criterion the decomposition is exact.

    Examples
    --------
    >>> import torch
    >>> u, g, v = tucker2(torch.randn(8, 6, 3, 3), ranks=(4, 3))
    >>> tuple(u.shape), tuple(g.shape), tuple(v.shape)
    ((8, 4), (4, 3, 3, 3), (6, 3))
    """
    if not isinstance(kernel, torch.Tensor) or kernel.dim() != 4:
        raise ValueError(f"kernel must be a 4-D torch.Tensor [out, in, kh, kw], got "
                         f"{getattr(kernel, 'shape', type(kernel).__name__)}")
    _check_criteria(max_bond, keep, max_error, cutoff, cutoff_mode)
    ratio = _check_ratio(ratio)
    with torch.no_grad():
        w = kernel.detach().to(torch.float64)
        norm = float(w.norm())
        u_out, s_out = _leg_svd(w, 0)
        u_in, s_in = _leg_svd(w, 1)
        full = (int(s_out.numel()), int(s_in.numel()))
        r = list(full)
        if ranks is not None:
            rr = (ranks, ranks) if isinstance(ranks, int) else tuple(ranks)
            if len(rr) != 2:
                raise ValueError(f"ranks must be an int or (r_out, r_in), got {ranks!r}")
            for name, v in zip(("r_out", "r_in"), rr, strict=True):
                _check_positive_int(name, v, allow_none=False)
            r = [min(r[0], rr[0]), min(r[1], rr[1])]
        if any(c is not None for c in (max_bond, keep, max_error, cutoff)):
            per_leg = None if max_error is None else max_error / math.sqrt(2)
            for k, s in enumerate((s_out, s_in)):
                r[k] = min(r[k], choose_rank(s, max_bond=max_bond, keep=keep,
                                             max_error=per_leg, cutoff=cutoff,
                                             cutoff_mode=cutoff_mode, norm=norm, check=False))
        if ratio is not None:
            rb = _ranks_for_ratio(tuple(w.shape), (full[0], full[1]), ratio)
            r = [min(r[0], rb[0]), min(r[1], rb[1])]
        a, b = u_out[:, : r[0]], u_in[:, : r[1]]
        core = torch.einsum("oihw,oa,ib->abhw", w, a, b)
    return tuple(t.to(kernel).contiguous().clone() for t in (a, core, b))  # type: ignore[return-value]


class TuckerConv2d(_FactorizedConv2d):
    """A ``Conv2d`` whose kernel is a Tucker-2 network ``out - core(kh, kw) - in``.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode
        As :class:`torch.nn.Conv2d` (``padding`` may be ``"same"`` or ``"valid"``).
    ranks, max_bond, keep, max_error, cutoff, cutoff_mode, ratio
        How many directions of each channel leg to keep (see :func:`tucker2`). A fresh layer
        factors PyTorch's default initialisation; use :meth:`from_conv` to factor a trained
        one. With none, the factorization is exact (full ranks).
    path
        ``"auto"`` (by a FLOP estimate per input shape), ``"dense"`` or ``"factored"``.
    device, dtype
        Where the factors live.

    Attributes
    ----------
    u_out, core, u_in : nn.Parameter
        ``[out, r_out]``, ``[r_out, r_in, kh, kw]``, ``[in/groups, r_in]``.
    tn : quimb.tensor.TensorNetwork
        The three factors as a labelled network (their data are the parameters).

    Examples
    --------
    >>> import torch, tnconv
    >>> conv = torch.nn.Conv2d(16, 32, 3, padding=1)
    >>> layer = tnconv.TuckerConv2d.from_conv(conv, ranks=(8, 4))
    >>> layer.ranks, layer(torch.randn(2, 16, 8, 8)).shape
    ((8, 4), torch.Size([2, 32, 8, 8]))
    """

    kind = "tucker"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: str | int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        ranks: int | tuple[int, int] | None = None,
        max_bond: int | None = None,
        keep: float | None = None,
        max_error: float | None = None,
        cutoff: float | None = None,
        cutoff_mode: str | None = None,
        ratio: float | None = None,
        path: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, path=path, device=device, dtype=dtype)
        conv = self._random_conv(self._hyper(), device, dtype)
        self._load(conv, ranks=ranks, max_bond=max_bond, keep=keep, max_error=max_error,
                   cutoff=cutoff, cutoff_mode=cutoff_mode, ratio=ratio)

    def _load(self, conv: nn.Conv2d, **criteria: Any) -> None:
        u, g, v = tucker2(conv.weight, **criteria)
        self.u_out = nn.Parameter(u)
        self.core = nn.Parameter(g)
        self.u_in = nn.Parameter(v)
        self._load_bias(conv)

    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv2d,
        *,
        ranks: int | tuple[int, int] | None = None,
        max_bond: int | None = None,
        keep: float | None = None,
        max_error: float | None = None,
        cutoff: float | None = None,
        cutoff_mode: str | None = None,
        ratio: float | None = None,
        path: str = "auto",
    ) -> TuckerConv2d:
        """Factor a (trained) ``nn.Conv2d``; same device, dtype and hyper-parameters.

        Criteria as in :func:`tucker2`; with none the layer reproduces ``conv`` exactly.

        Examples
        --------
        >>> import torch, tnconv
        >>> layer = tnconv.TuckerConv2d.from_conv(torch.nn.Conv2d(8, 8, 3), max_bond=2)
        >>> layer.ranks
        (2, 2)
        """
        hyper = conv_hyperparameters(conv)
        layer = cls.__new__(cls)
        _FactorizedConv2d.__init__(layer, **hyper, path=path, device=conv.weight.device,
                                   dtype=conv.weight.dtype)
        layer._load(conv, ranks=ranks, max_bond=max_bond, keep=keep, max_error=max_error,
                    cutoff=cutoff, cutoff_mode=cutoff_mode, ratio=ratio)
        return layer

    @property
    def ranks(self) -> tuple[int, int]:
        """``(r_out, r_in)``."""
        return int(self.core.shape[0]), int(self.core.shape[1])

    @property
    def tn(self) -> Any:
        """The factors as a quimb ``TensorNetwork`` (indices ``out, r_out, r_in, in, kh, kw``)."""
        import quimb.tensor as qtn

        data = (self.u_out, self.core, self.u_in)
        return qtn.TensorNetwork([qtn.Tensor(d, inds=ix, tags={name})
                                  for d, ix, name
                                  in zip(data, _INDS, ("U_OUT", "CORE", "U_IN"), strict=True)])

    def _kernel_network(
        self,
    ) -> tuple[list[torch.Tensor], list[tuple[str, ...]], tuple[str, ...]]:
        return [self.u_out, self.core, self.u_in], list(_INDS), _LEGS

    def _factor_steps(self) -> list[FactorStep] | None:
        if self.groups != 1:
            return None
        return [
            FactorStep(self.u_in.t()[:, :, None, None]),
            FactorStep(self.core, "hw"),
            FactorStep(self.u_out[:, :, None, None]),
        ]

    def _factor_repr(self) -> str:
        return f"ranks={self.ranks}"
