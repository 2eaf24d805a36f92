"""Watching and re-compressing the bonds of a tensorized model during training.

Trained MPS cores drift away from the canonical form that :func:`tnconv.to_mps` produced; the
spectrum at every bond is recomputed from the current kernel (an exact ``to_mps`` under
``no_grad``, outside the training graph). From it:

* :func:`bond_entropies` -- the entanglement entropy of every bond of every MPS layer;
* :class:`EntropyLog` -- a ``callback(model, epoch)`` for :func:`tnconv.fit` that records them
  once per epoch;
* :func:`recompress` -- drops the bond directions whose singular values fell below a
  threshold. It replaces parameters, so run it *between* calls to ``fit`` (each call builds a
  new optimizer), not inside one.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .mps_conv2d import MPSConv2d

__all__ = ["bond_entropies", "recompress", "EntropyLog"]


def _mps_layers(model: nn.Module) -> list[tuple[str, MPSConv2d]]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return [(n, m) for n, m in model.named_modules() if isinstance(m, MPSConv2d)]


def bond_entropies(
    model: nn.Module, *, alpha: float = 1.0, base: float = 2.0
) -> dict[str, list[float]]:
    """Entropy of every bond of every :class:`MPSConv2d` in a model.

    Parameters
    ----------
    model
        A model (or a single layer).
    alpha, base
        Renyi order and logarithm base (see :func:`tnconv.entropy`).

    Returns
    -------
    dict
        ``{layer name: [entropy of b0, b1, ...]}`` (``""`` names a bare layer).

    Examples
    --------
    >>> import torch, tnconv
    >>> net, _ = tnconv.tensorize(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)))
    >>> list(bond_entropies(net))
    ['0']
    """
    return {n: m.bond_entropies(alpha=alpha, base=base) for n, m in _mps_layers(model)}


def recompress(
    model: nn.Module,
    threshold: float,
    *,
    cutoff_mode: str = "rel",
) -> dict[str, list[int]]:
    """Drop weak bond directions of every :class:`MPSConv2d` in a model, in place.

    Parameters
    ----------
    model
        A model (or a single layer).
    threshold
        Singular values ``<= threshold`` are dropped (relative to each bond's largest with
        the default ``cutoff_mode="rel"``; see :mod:`tnconv.truncation` for the other modes).
    cutoff_mode
        How ``threshold`` is read (quimb's vocabulary).

    Returns
    -------
    dict
        ``{layer name: new bond dimensions}``. The cores are new parameters: build a new
        optimizer afterwards.

    Examples
    --------
    >>> import torch, tnconv
    >>> net, _ = tnconv.tensorize(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)))
    >>> recompress(net, 1e-2)["0"][0] <= 4
    True
    """
    return {n: m.recompress(threshold, cutoff_mode=cutoff_mode) for n, m in _mps_layers(model)}


class EntropyLog:
    """A ``callback(model, epoch)`` for :func:`tnconv.fit` recording bond entropies per epoch.

    Attributes
    ----------
    history : list of dict
        ``{"epoch": e, "entropies": {layer: [..]}}`` per call.

    Examples
    --------
    >>> import torch, tnconv
    >>> net, _ = tnconv.tensorize(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)))
    >>> log = EntropyLog()
    >>> log(net, 1)
    >>> log.history[0]["epoch"]
    1
    """

    def __init__(self, *, alpha: float = 1.0, base: float = 2.0) -> None:
        self.alpha, self.base = alpha, base
        self.history: list[dict[str, Any]] = []

    def __call__(self, model: nn.Module, epoch: int) -> None:
        self.history.append({"epoch": epoch, "entropies": bond_entropies(
            model, alpha=self.alpha, base=self.base)})
