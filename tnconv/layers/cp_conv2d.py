"""CP (canonical polyadic) convolutions: a sum of rank-one kernels, fitted by ALS.

The factors are those of :func:`tnconv.cp.to_cp`, kept as parameters::

    W[o, i, h, w] = sum_r A[o, r] * B[i, r] * C[h, r] * D[w, r]

Applied as convolutions, the layer is ``1x1 (in -> R)``, depthwise ``kh x kw`` (the kernel
``C[h, r] D[w, r]``, Lebedev et al. (2015) apply it as depthwise ``kh x 1`` then ``1 x kw``),
``1x1 (R -> out)``. The two 1x1 steps run as batched matrix products on the ``[N, H*W, C]``
view of the activations, so that the ``R``-channel intermediate is channels-last, the layout
the CPU's depthwise kernel is fast on, without a copy; the output is NCHW like ``nn.Conv2d``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..cp import KernelCP, to_cp
from .base import FactorizedConv2d, FactorStep

__all__ = ["CPConv2d", "CP_LAYER_RIDGE"]

#: ALS damping of a layer's fit (see :func:`tnconv.cp.cp_als`): trainable, non-degenerate
#: factors (at 30x the default kernel scale, undamped fits diverged under SGD at lr=0.01).
CP_LAYER_RIDGE = 5e-3


def _decompose(kernel: torch.Tensor, **options: Any) -> KernelCP:
    """:func:`tnconv.cp.to_cp` with ``ridge=CP_LAYER_RIDGE`` unless given."""
    return to_cp(kernel, **{"ridge": CP_LAYER_RIDGE, **options})


class _MixRows(torch.autograd.Function):
    """``out[n, o, p] = sum_r a[o, r] rows[n, p, r] + bias[o]``: the ``1x1 (R -> out)`` step.

    ``rows`` is the channels-last ``[N, H*W, R]`` view of the depthwise step's output; the
    gradient of ``rows`` is returned in that same layout (autograd's own ``bmm`` would return
    it NCHW-strided, and the depthwise backward would copy it back to channels-last).
    """

    @staticmethod
    def forward(ctx: Any, rows: torch.Tensor, a: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(rows, a)
        ctx.has_bias = bias is not None
        a_n = a.expand(rows.shape[0], *a.shape)
        if bias is None:
            return torch.bmm(a_n, rows.transpose(1, 2))
        return torch.baddbmm(bias[None, :, None], a_n, rows.transpose(1, 2))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        rows, a = ctx.saved_tensors
        g_rows = g_a = g_bias = None
        if ctx.needs_input_grad[0]:
            g_rows = torch.bmm(grad.transpose(1, 2), a.expand(grad.shape[0], *a.shape))
        if ctx.needs_input_grad[1]:
            g_a = torch.bmm(grad, rows).sum(0)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            g_bias = grad.sum((0, 2))
        return g_rows, g_a, g_bias


class CPConv2d(FactorizedConv2d):
    """A ``Conv2d`` whose kernel is a rank-``R`` CP decomposition, fitted by ALS.

    Parameters
    ----------
    rank, max_bond, max_error, ratio, n_iter, tol, seed, n_starts, line_search, ridge, max_time
        Keyword-only: how ``R`` is chosen and the ALS controls (see :func:`tnconv.cp.to_cp`);
        ``ridge`` defaults to :data:`CP_LAYER_RIDGE` here (trainable factors).
        With none of ``rank``, ``max_bond``, ``max_error``, ``ratio``: ``ratio=4``.
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode
        As :class:`torch.nn.Conv2d`; ``path``, ``device`` and ``dtype`` as
        :class:`FactorizedConv2d`. A fresh layer fits PyTorch's default initialisation.

    Attributes
    ----------
    a, b, c, d : nn.Parameter
        Factors of the ``out``, ``in``, ``kh`` and ``kw`` legs, each ``[size, R]``.
    als_errors : list of float
        Relative error of the fit after each ALS sweep.
    rel_error : float
        Relative error of the factored kernel against the one it was fitted to.

    Examples
    --------
    >>> import torch, tnconv
    >>> layer = tnconv.CPConv2d.from_conv(torch.nn.Conv2d(16, 32, 3, padding=1), rank=8)
    >>> layer.rank, layer(torch.randn(2, 16, 8, 8)).shape
    (8, torch.Size([2, 32, 8, 8]))
    >>> tnconv.CPConv2d.from_conv(torch.nn.Conv2d(8, 8, 3), ratio=2.0).rank  # 576 / (2 * 22)
    13
    """

    kind = "cp"
    decompose = staticmethod(_decompose)

    def _set_factors(self, decomposition: KernelCP) -> None:
        self.a, self.b, self.c, self.d = (nn.Parameter(f) for f in decomposition.factors)
        self.als_errors: list[float] = decomposition.als_errors

    @property
    def rank(self) -> int:
        """The CP rank ``R``."""
        return int(self.a.shape[1])

    def _kernel_network(
        self,
    ) -> tuple[list[torch.Tensor], list[tuple[str, ...]], tuple[str, ...]]:
        return [self.a, self.b, self.c, self.d], list(KernelCP.inds), KernelCP.legs

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

    def _factored_forward(self, x: torch.Tensor, steps: Sequence[FactorStep]) -> torch.Tensor:
        """``1x1 -> depthwise -> 1x1`` as ``bmm -> conv2d (channels-last) -> bmm``."""
        prepad, (ph, pw) = self._step_padding()
        if prepad:
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            x = F.pad(x, self._pads, mode=mode)
        n, c, h, w = x.shape
        r = self.rank
        if x.is_contiguous(memory_format=torch.channels_last):
            rows = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view
        else:
            rows = x.reshape(n, c, h * w).transpose(1, 2)  # a view of an NCHW tensor
        y = torch.bmm(rows, self.b.expand(n, c, r)).view(n, h, w, r).permute(0, 3, 1, 2)
        y = F.conv2d(y, steps[1].weight, None, self.stride, (ph, pw), self.dilation, r)
        ho, wo = y.shape[-2:]
        rows = y.permute(0, 2, 3, 1).reshape(n, ho * wo, r)  # a view where y is channels-last
        out = _MixRows.apply(rows, self.a, self.bias)
        return out.view(n, self.out_channels, ho, wo)

    def _factor_repr(self) -> str:
        return f"rank={self.rank}"
