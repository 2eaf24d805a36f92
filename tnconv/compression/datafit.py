"""Data-fitted factors: a rank-``r`` layer that keeps a convolution's *output*, not its kernel.

A kernel truncated by its own singular values (``fit="weights"``) keeps the directions of
largest weight. On data, what matters is the layer's response ``y = W x``: for the cut
``out|in,kh,kw`` (a ``kh x kw`` convolution to ``r`` channels, then a ``1 x 1`` to ``out``),
the rank-``r`` kernel ``W' = U U^T W`` minimising ``E ||W x - W' x||^2`` over the data takes
for ``U`` the top-``r`` eigenvectors of the output's second moment ``M = E[(W x)(W x)^T]``
(bias excluded). This is the linear case of Zhang et al., "Accelerating very deep
convolutional networks for classification and detection" (TPAMI 2016): PCA of the outputs.
The relative response error at rank ``r`` is ``sqrt(sum_{k>r} lambda_k / sum_k lambda_k)``
from the eigenvalues of ``M``, exactly, with no pass over the data per rank.

Only the ``out x out`` moment of each layer is kept (one forward pass over the data, with
hooks), never the layer's inputs: the memory is ``sum out^2`` over the layers. Measured on the
cnn4 of the benchmarks (Fashion-MNIST, 1000 images for the moments, 5000 others held out;
``python benchmarks/bench_datafit.py``, deterministic), ``block2.conv`` alone at a quarter of
its parameters (rank 13) keeps 91.3 % accuracy against 72.7 % for the weight fit (dense
92.6 %); over the 4 layers x 3 sizes the data fit is better in 10 cases, worse in 2 (by 0.2
points at most).

:func:`tnconv.compress` offers these families to ``allocate="sensitivity"`` (``fit="data"``,
its default there): the measured drops decide per layer between data-fitted and
weight-fitted factors, and the ``uniform`` / ``energy`` / ``vbmf`` baselines stay fits of the
weights. The ``fit=`` choices are the registry :data:`FITS` (name -> :class:`Fit`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..registry import Registry
from .candidates import LayerChoices
from .families import Geometry, SVDFamily

__all__ = ["DATA_CUT", "MAX_IMAGES", "ResponseFamily", "output_moments", "with_data_families",
           "Fit", "FITS"]

#: The cut whose rank-``r`` form has a closed-form data fit.
DATA_CUT = "out|in,kh,kw"
#: Images of ``data`` used for the output moments (the first ones, in order).
MAX_IMAGES = 4096


class ResponseFamily(SVDFamily):
    """The cut ``out|in,kh,kw`` at rank ``r``, fitted to the layer's outputs on data.

    Parameters
    ----------
    weight, bias, geom
        As :class:`~tnconv.compression.families.SVDFamily`.
    moment
        ``out x out`` second moment of the layer's output without bias (any positive scale).

    Examples
    --------
    >>> import torch
    >>> w = torch.randn(6, 3, 3, 3)
    >>> y = torch.nn.functional.conv2d(torch.randn(20, 3, 8, 8), w)
    >>> y = y.transpose(0, 1).reshape(6, -1).double()
    >>> fam = ResponseFamily(w, 0, None, y @ y.T)
    >>> opt = fam.option((2,))
    >>> opt.key, opt.fit, tuple(opt.basis.shape), fam.option((6,)).error < 1e-6
    ('svd out|in,kh,kw (data)', 'data', (6, 2), True)
    """

    def __init__(self, weight: torch.Tensor, bias: int, geom: Geometry | None,
                 moment: torch.Tensor) -> None:
        super().__init__(weight, bias, geom, DATA_CUT)
        self.fit = "data"
        m = moment.detach().to("cpu", torch.float64)
        if m.shape != (self.shape[0], self.shape[0]):
            raise ValueError(f"moment must be {self.shape[0]} x {self.shape[0]} (out x out), "
                             f"got {tuple(m.shape)}")
        vals, vecs = torch.linalg.eigh((m + m.T) / 2)
        vals, self.vecs = vals.flip(0).clamp_min(0.0), vecs.flip(1)
        total = float(vals.sum())
        rest = torch.cat([vals.flip(0).cumsum(0).flip(0), vals.new_zeros(1)])
        self.response_tails = (rest / total).clamp_min(0.0).sqrt() if total > 0 else (
            torch.zeros_like(rest))

    def error(self, ranks: tuple[int, ...]) -> float:
        """Relative error of the layer's response on the data at rank ``ranks[0]``."""
        return float(self.response_tails[ranks[0]])

    def basis(self, ranks: tuple[int, ...]) -> torch.Tensor:
        """The top-``r`` eigenvectors of the output moment (``out x r``)."""
        return self.vecs[:, : ranks[0]]


@torch.no_grad()
def output_moments(model: nn.Module, data: Any, names: Sequence[str], *,
                   device: torch.device, max_images: int = MAX_IMAGES,
                   batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Second moments ``sum y y^T`` (``out x out``, float64) of the named convolutions' outputs.

    One forward pass of ``model`` in eval mode over the first ``max_images`` images of
    ``data`` (any form of :mod:`tnconv.data.loaders`); the bias is subtracted from each
    output. The model is not modified (its mode is restored, the hooks removed).

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU())
    >>> data = (torch.randn(8, 1, 6, 6), torch.zeros(8, dtype=torch.long))
    >>> m = output_moments(net, data, ["0"], device=torch.device("cpu"))
    >>> tuple(m["0"].shape), bool(torch.allclose(m["0"], m["0"].T))
    ((4, 4), True)
    """
    from ..data import loaders

    found = {n: torch.zeros(()) for n in names}
    hooks = []
    for name in names:
        def hook(mod: nn.Module, _inp: Any, out: torch.Tensor, name: str = name) -> None:
            y = out.detach()
            if getattr(mod, "bias", None) is not None:
                y = y - mod.bias.detach().view(1, -1, *([1] * (y.dim() - 2)))
            y = y.transpose(0, 1).reshape(y.shape[1], -1).to(torch.float64)
            found[name] = found[name].to(y.device) + y @ y.T
        hooks.append(model.get_submodule(name).register_forward_hook(hook))
    was, seen = model.training, 0
    try:
        model.eval()
        for x, _ in loaders.batches(data, batch_size):
            x = x[: max_images - seen].to(device)
            model(x)
            seen += len(x)
            if seen >= max_images:
                break
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    if seen == 0:
        raise ValueError("data has no images to fit the factors on")
    return {n: m.cpu() for n, m in found.items()}


def with_data_families(layers: Sequence[LayerChoices],
                       moments: dict[str, torch.Tensor]) -> list[LayerChoices]:
    """Copies of ``layers`` with a :class:`ResponseFamily` added where the cut
    ``out|in,kh,kw`` is allowed (a weight-fitted family of that cut is among the layer's)
    and a moment was measured (with that family's rank multiple).

    Examples
    --------
    >>> import torch
    >>> from tnconv.compression.candidates import dense_option, layer_families
    >>> w = torch.randn(4, 2, 3, 3)
    >>> lc = LayerChoices("0", dense_option((4, 2, 3, 3), 0, None),
    ...                   layer_families(w, 0, None, method="svd"))
    >>> [f.key for f in with_data_families([lc], {"0": torch.eye(4)})[0].families][-1]
    'svd out|in,kh,kw (data)'
    """
    out = []
    for lc in layers:
        plain = [f for f in lc.families if f.key == f"svd {DATA_CUT}"]
        extra = [ResponseFamily(plain[0].weight, plain[0].bias, plain[0].geom, moments[lc.name])
                 .set_multiple(plain[0].multiple)] if plain and lc.name in moments else []
        out.append(LayerChoices(lc.name, lc.dense, [*lc.families, *extra]))
    return out


@dataclass(frozen=True)
class Fit:
    """One ``fit=`` of :func:`tnconv.compress`: what the factors approximate.

    Attributes
    ----------
    description
        One line, for help texts.
    families
        ``(layers, moments) -> layers`` adding the families fitted to data (with the layers'
        output moments, :func:`output_moments`); ``None``: the weights' own families only,
        nothing measured on data.
    """

    description: str
    families: Callable[[Sequence[LayerChoices], dict[str, torch.Tensor]],
                       list[LayerChoices]] | None = None


#: Valid ``fit`` values of :func:`tnconv.compress`: name -> :class:`Fit` (``"auto"`` is
#: resolved by :func:`tnconv.compress` to ``"data"`` or ``"weights"``).
FITS: Registry[Fit] = Registry("fit", {
    "auto": Fit("data with allocate='sensitivity' and a params or flops budget, else weights"),
    "weights": Fit("the factors approximate each kernel"),
    "data": Fit(f"the cut {DATA_CUT} may also be fitted to each layer's outputs on data",
                with_data_families),
})
