"""Tucker-2 convolutions: a core on the spatial legs, one factor matrix per channel leg.

The factors are those of :func:`tnconv.tucker.to_tucker` (a truncated HOSVD of the ``out``
and ``in`` legs refined by HOOI), kept as parameters::

    W[o, i, h, w] = sum_{a, b} U_out[o, a] * G[a, b, h, w] * U_in[i, b]

Applied as convolutions, the layer is ``1x1 (in -> r_in)``, ``kh x kw (r_in -> r_out)``,
``1x1 (r_out -> out)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..tucker import KernelTucker, to_tucker
from .base import FactorizedConv2d, FactorStep

__all__ = ["TuckerConv2d"]


class TuckerConv2d(FactorizedConv2d):
    """A ``Conv2d`` whose kernel is a Tucker-2 network ``out - core(kh, kw) - in``.

    Parameters
    ----------
    ranks, max_bond, keep, max_error, cutoff, cutoff_mode, ratio
        Keyword-only: how many directions of each channel leg to keep (see
        :func:`tnconv.tucker.to_tucker`). With none, the factorization is exact (full ranks).
    n_iter, tol
        Keyword-only: HOOI sweeps after the HOSVD start and their stopping tolerance (see
        :func:`tnconv.tucker.to_tucker`; ``n_iter=0`` keeps the plain HOSVD).
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode
        As :class:`torch.nn.Conv2d`; ``path``, ``device`` and ``dtype`` as
        :class:`FactorizedConv2d`. A fresh layer factors PyTorch's default initialisation; use
        :meth:`from_conv` to factor a trained one.

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
    >>> tnconv.TuckerConv2d.from_conv(torch.nn.Conv2d(8, 8, 3), max_bond=2).ranks
    (2, 2)
    """

    kind = "tucker"
    decompose = staticmethod(to_tucker)

    def _set_factors(self, decomposition: KernelTucker) -> None:
        self.u_out, self.core, self.u_in = (nn.Parameter(f) for f in decomposition.factors)

    @property
    def ranks(self) -> tuple[int, int]:
        """``(r_out, r_in)``."""
        return int(self.core.shape[0]), int(self.core.shape[1])

    @property
    def tn(self) -> Any:
        """The factors as a quimb ``TensorNetwork`` (indices ``out, r_out, r_in, in, kh, kw``)."""
        import quimb.tensor as qtn

        data = (self.u_out, self.core, self.u_in)
        return qtn.TensorNetwork([
            qtn.Tensor(d, inds=ix, tags={name}) for d, ix, name
            in zip(data, KernelTucker.inds, ("U_OUT", "CORE", "U_IN"), strict=True)])

    def _kernel_network(
        self,
    ) -> tuple[list[torch.Tensor], list[tuple[str, ...]], tuple[str, ...]]:
        return [self.u_out, self.core, self.u_in], list(KernelTucker.inds), KernelTucker.legs

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
