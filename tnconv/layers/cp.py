"""CP (canonical polyadic) convolutions, fitted by alternating least squares in torch.

The kernel is a sum of ``R`` rank-one terms::

    W[o, i, h, w] = sum_r A[o, r] * B[i, r] * C[h, r] * D[w, r]

All four legs share the one CP index ``r`` (a hyper-edge; opt_einsum contracts it directly).
Applied as convolutions, the layer is ``1x1 (in -> R)``, depthwise ``kh x kw`` (the kernel
``C[h, r] D[w, r]``, Lebedev et al. (2015) apply it as depthwise ``kh x 1`` then ``1 x kw``),
``1x1 (R -> out)``.

CP has no SVD-like truncation: a rank-``R`` fit is found by ALS (:func:`cp_als`), in float64 on
the kernel's device, from a fixed-seed HOSVD start, so it is reproducible.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..spectra import _check_max_error
from .base import (
    FactorStep,
    _check_positive_int,
    _check_ratio,
    _FactorizedConv2d,
    conv_hyperparameters,
)

__all__ = ["CPConv2d", "cp_als", "DEFAULT_CP_RATIO"]

_INDS = (("out", "r"), ("in", "r"), ("kh", "r"), ("kw", "r"))
_LEGS = ("out", "in", "kh", "kw")
_LETTERS = "abcdefgh"

#: Compression ``dense / factored`` that sets the CP rank when no criterion is given.
DEFAULT_CP_RATIO = 4.0


def _mttkrp(x: torch.Tensor, factors: list[torch.Tensor], mode: int) -> torch.Tensor:
    """``X_(mode) @ khatri_rao(other factors)`` as one einsum, ``[I_mode, R]``."""
    n = x.dim()
    others = [m for m in range(n) if m != mode]
    eq = (_LETTERS[:n] + "," + ",".join(f"{_LETTERS[m]}z" for m in others)
          + f"->{_LETTERS[mode]}z")
    return torch.einsum(eq, x, *(factors[m] for m in others))


def cp_als(
    tensor: torch.Tensor,
    rank: int,
    *,
    n_iter: int = 50,
    tol: float = 1e-7,
    seed: int = 0,
) -> tuple[list[torch.Tensor], list[float]]:
    """Rank-``rank`` CP decomposition by alternating least squares.

    Parameters
    ----------
    tensor
        Any real tensor (not modified); the fit runs in float64 on its device.
    rank
        Number of rank-one terms.
    n_iter
        Maximum number of ALS sweeps (each updates every factor once).
    tol
        Stop when the relative error changes by less than this between sweeps.
    seed
        Seed of the random columns used when ``rank`` exceeds a leg's size (the start is
        otherwise the leading singular vectors of each unfolding).

    Returns
    -------
    factors : list of torch.Tensor
        One ``[size_n, rank]`` matrix per axis, in the tensor's dtype, with balanced column
        norms across the factors.
    errors : list of float
        Relative Frobenius error ``||X - X_cp|| / ||X||`` after each sweep.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> a, b, c = (torch.randn(n, 2, generator=g, dtype=torch.float64) for n in (5, 4, 3))
    >>> x = torch.einsum("ir,jr,kr->ijk", a, b, c)
    >>> factors, errors = cp_als(x, 2, n_iter=200, tol=1e-14)
    >>> errors[-1] < 1e-6
    True
    """
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        raise TypeError(f"tensor must be a floating-point torch.Tensor, got "
                        f"{getattr(tensor, 'dtype', type(tensor).__name__)}")
    if not 2 <= tensor.dim() <= len(_LETTERS) - 1:
        raise ValueError(f"tensor must have 2 to {len(_LETTERS) - 1} dimensions, "
                         f"got shape {tuple(tensor.shape)}")
    _check_positive_int("rank", rank, allow_none=False)
    _check_positive_int("n_iter", n_iter, allow_none=False)
    if not isinstance(tol, (int, float)) or tol < 0:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    with torch.no_grad():
        x = tensor.detach().to(torch.float64)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        factors = []
        for mode in range(x.dim()):
            m = x.movedim(mode, 0).reshape(x.shape[mode], -1)
            u = torch.linalg.svd(m, full_matrices=False)[0][:, :rank]
            if u.shape[1] < rank:
                extra = torch.randn(x.shape[mode], rank - u.shape[1], generator=gen,
                                    dtype=torch.float64).to(x.device)
                u = torch.cat([u, extra / math.sqrt(x.shape[mode])], 1)
            factors.append(u)
        norm2 = float((x * x).sum())
        errors: list[float] = []
        if norm2 == 0.0:
            return [f.zero_().to(tensor) for f in factors], [0.0]
        for _ in range(n_iter):
            for mode in range(x.dim()):
                v = torch.ones(rank, rank, dtype=torch.float64, device=x.device)
                for m in range(x.dim()):
                    if m != mode:
                        v = v * (factors[m].T @ factors[m])
                mk = _mttkrp(x, factors, mode)
                factors[mode] = mk @ torch.linalg.pinv(v, hermitian=True)
            inner = float((mk * factors[mode]).sum())
            rec2 = float((v * (factors[mode].T @ factors[mode])).sum())
            errors.append(math.sqrt(max(norm2 - 2 * inner + rec2, 0.0) / norm2))
            if len(errors) > 1 and abs(errors[-2] - errors[-1]) < tol:
                break
        # balance: every factor's column r gets the same norm (the geometric mean)
        norms = torch.stack([f.norm(dim=0) for f in factors])  # [ndim, R]
        target = norms.clamp_min(1e-300).log().mean(0).exp()
        factors = [f * torch.where(n > 0, target / n.clamp_min(1e-300), torch.ones_like(n))
                   for f, n in zip(factors, norms, strict=True)]
    return [f.to(tensor).contiguous() for f in factors], errors


class CPConv2d(_FactorizedConv2d):
    """A ``Conv2d`` whose kernel is a rank-``R`` CP decomposition, fitted by ALS.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode
        As :class:`torch.nn.Conv2d` (``padding`` may be ``"same"`` or ``"valid"``).
    rank
        Number of rank-one terms ``R``.
    max_bond
        Upper bound on ``R`` (the shared vocabulary of :func:`tnconv.tensorize`).
    max_error
        Smallest ``R`` in ``1, 2, 4, ...`` whose ALS fit reaches this relative error (up to the
        rank that has as many parameters as the dense kernel).
    ratio
        ``R`` from a parameter budget ``dense / ratio``. When ``rank``, ``max_bond``,
        ``max_error`` and ``ratio`` are all None, ``ratio=4`` (:data:`DEFAULT_CP_RATIO`).
    n_iter, tol, seed
        ALS controls (see :func:`cp_als`).
    path
        ``"auto"`` (by a FLOP estimate per input shape), ``"dense"`` or ``"factored"``.
    device, dtype
        Where the factors live.

    Attributes
    ----------
    a, b, c, d : nn.Parameter
        Factors of the ``out``, ``in``, ``kh`` and ``kw`` legs, each ``[size, R]``.
    als_errors : list of float
        Relative error of the fit after each ALS sweep.

    Examples
    --------
    >>> import torch, tnconv
    >>> layer = tnconv.CPConv2d.from_conv(torch.nn.Conv2d(16, 32, 3, padding=1), rank=8)
    >>> layer.rank, layer(torch.randn(2, 16, 8, 8)).shape
    (8, torch.Size([2, 32, 8, 8]))
    """

    kind = "cp"

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
        rank: int | None = None,
        max_bond: int | None = None,
        max_error: float | None = None,
        ratio: float | None = None,
        n_iter: int = 50,
        tol: float = 1e-7,
        seed: int = 0,
        path: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, path=path, device=device, dtype=dtype)
        conv = self._random_conv(self._hyper(), device, dtype)
        self._load(conv, rank=rank, max_bond=max_bond, max_error=max_error, ratio=ratio,
                   n_iter=n_iter, tol=tol, seed=seed)

    def _load(self, conv: nn.Conv2d, *, rank: Any, max_bond: Any, max_error: Any, ratio: Any,
              n_iter: int, tol: float, seed: int) -> None:
        _check_positive_int("rank", rank)
        _check_positive_int("max_bond", max_bond)
        ratio = _check_ratio(ratio)
        if max_error is not None:
            _check_max_error(max_error)
        w = conv.weight.detach()
        shape = tuple(w.shape)
        dense = math.prod(shape)
        r_full = max(1, dense // sum(shape))  # as many parameters as the dense kernel
        if all(c is None for c in (rank, max_bond, max_error, ratio)):
            ratio = DEFAULT_CP_RATIO
        cap = min(c for c in (rank, max_bond) if c is not None) if (
            rank is not None or max_bond is not None) else None
        if ratio is not None:
            r_ratio = max(1, int(dense / (ratio * sum(shape))))
            cap = r_ratio if cap is None else min(cap, r_ratio)
        if max_error is not None:
            limit = r_full if cap is None else cap
            r = 1
            while True:
                factors, errors = cp_als(w, r, n_iter=n_iter, tol=tol, seed=seed)
                if errors[-1] <= max_error or r >= limit:
                    break
                r = min(2 * r, limit)
        else:
            factors, errors = cp_als(w, cap, n_iter=n_iter, tol=tol, seed=seed)  # type: ignore[arg-type]
        self.a, self.b, self.c, self.d = (nn.Parameter(f) for f in factors)
        self.als_errors = errors
        self._load_bias(conv)

    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv2d,
        *,
        rank: int | None = None,
        max_bond: int | None = None,
        max_error: float | None = None,
        ratio: float | None = None,
        n_iter: int = 50,
        tol: float = 1e-7,
        seed: int = 0,
        path: str = "auto",
    ) -> CPConv2d:
        """Fit a rank-``R`` CP to a (trained) ``nn.Conv2d``; same device, dtype, hyper-parameters.

        Criteria as in the class docstring.

        Examples
        --------
        >>> import torch, tnconv
        >>> layer = tnconv.CPConv2d.from_conv(torch.nn.Conv2d(8, 8, 3), ratio=2.0)
        >>> layer.rank  # 8*8*3*3 / (2 * (8 + 8 + 3 + 3))
        13
        """
        hyper = conv_hyperparameters(conv)
        layer = cls.__new__(cls)
        _FactorizedConv2d.__init__(layer, **hyper, path=path, device=conv.weight.device,
                                   dtype=conv.weight.dtype)
        layer._load(conv, rank=rank, max_bond=max_bond, max_error=max_error, ratio=ratio,
                    n_iter=n_iter, tol=tol, seed=seed)
        return layer

    @property
    def rank(self) -> int:
        """The CP rank ``R``."""
        return int(self.a.shape[1])

    def _kernel_network(
        self,
    ) -> tuple[list[torch.Tensor], list[tuple[str, ...]], tuple[str, ...]]:
        return [self.a, self.b, self.c, self.d], list(_INDS), _LEGS

    def _factor_steps(self) -> list[FactorStep] | None:
        if self.groups != 1:
            return None
        r = self.rank
        # the two depthwise factors act as one depthwise kh x kw convolution whose kernel is
        # their outer product: one pass over the [N, R, H, W] activations instead of two
        # (10-25 % faster per layer on CPU, measured; the FLOPs are negligible either way)
        spatial = (self.c.t()[:, :, None] * self.d.t()[:, None, :])[:, None]
        return [
            FactorStep(self.b.t()[:, :, None, None]),
            FactorStep(spatial, "hw", groups=r),
            FactorStep(self.a[:, :, None, None]),
        ]

    def _factor_repr(self) -> str:
        return f"rank={self.rank}"
