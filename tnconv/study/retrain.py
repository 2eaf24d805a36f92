"""Retraining truncated models: the recovery curve, with or without keeping the truncation.

:func:`retrain` fine-tunes a model (typically the output of :func:`tnconv.truncate_model`) with
:func:`tnconv.train.fit` and records the evaluation accuracy before retraining (epoch 0) and
after every epoch.

Keeping the truncation (``keep_truncation=True``)
-------------------------------------------------
After every optimizer step each truncated kernel is projected back onto the set of kernels of
its kept rank across its cut(s) (several cuts: one after the other, in the same order as the
truncation). Two projections are available:

* ``projection="svd"`` (default): the best rank-``r`` approximation of the updated kernel (a
  fresh truncated SVD per step). This is projected gradient descent on the rank-``r`` set: the
  kept subspaces may rotate, so the model can recover more, at the price of one SVD per
  truncated layer and step.
* ``projection="subspace"``: ``W -> U_r U_r^T W V_r V_r^T`` with the singular vectors of the
  truncated kernel, fixed for the whole run: two small matrix products per step, but only the
  ``r x r`` core between the kept subspaces can learn.

Either way the retrained kernels still have rank at most ``r`` across their cut, so the
recovered model is exactly as compressible as the truncated one.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..decomp import svd
from ..records import Records
from ..spectra import matricize
from ..truncation import CutSVD
from .model_truncation import REPORT_ATTR

__all__ = ["retrain", "Projector", "PROJECTIONS"]

#: Valid ``projection`` values.
PROJECTIONS = ("svd", "subspace")


class _CutProjection:
    """Projection of one kernel onto rank ``rank`` across ``cut``."""

    def __init__(self, weight: torch.Tensor, cut: str, rank: int, projection: str) -> None:
        m, lay, groups = matricize(weight.detach(), cut)
        perm = [lay.physical_legs.index(n) for g in groups for n in g]
        self.inverse = [perm.index(i) for i in range(len(perm))]
        self.grouped = [lay.sizes[n] for g in groups for n in g]
        self.shape = tuple(weight.shape)
        self.cut, self.rank, self.projection = cut, rank, projection
        if projection == "subspace":
            u, _, vh = svd(m)
            self.u, self.vh = u[:, :rank], vh[:rank]

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        if self.projection == "svd":
            return CutSVD(weight, self.cut).reconstruct(self.rank)
        m, _, _ = matricize(weight, self.cut)
        m = self.u @ ((self.u.mT @ m) @ self.vh.mT) @ self.vh
        return m.reshape(self.grouped).permute(self.inverse).reshape(self.shape).to(weight.dtype)


def _check_truncation(model: nn.Module, truncation: Any) -> list[dict[str, Any]]:
    """The rows of ``truncation``, each naming a layer of ``model`` with a weight, its cut
    and its rank(s); a ValueError / TypeError naming ``truncation`` otherwise."""
    if isinstance(truncation, (str, bytes)) or not isinstance(truncation, Sequence):
        raise TypeError("truncation must be the report (a list of row dicts) of "
                        f"tnconv.truncate_model, got {type(truncation).__name__}")
    layers = dict(model.named_modules())
    for i, row in enumerate(truncation):
        if not isinstance(row, Mapping):
            raise TypeError(f"truncation[{i}] must be a dict row, got {type(row).__name__}")
        name = row.get("layer")
        if name not in layers or not isinstance(getattr(layers[name], "weight", None),
                                                torch.Tensor):
            raise ValueError(f"truncation[{i}] names layer {name!r}, which is not a layer with "
                             "a weight in the model; truncation rows come from "
                             "tnconv.truncate_model of this model")
        if not isinstance(row.get("cut"), str) or not row["cut"].strip():
            raise ValueError(f"truncation[{i}] (layer {name!r}) has no cut (a cut string such "
                             f"as 'out|in,kh,kw'), got {row.get('cut')!r}")
        if row.get("ranks") is None and row.get("rank") is None:
            raise ValueError(f"truncation[{i}] (layer {name!r}) has no rank or ranks")
    return list(truncation)


class Projector:
    """Projects the truncated kernels of a model back onto their kept ranks.

    Parameters
    ----------
    model
        The truncated model.
    truncation
        The report of :func:`tnconv.truncate_model` (rows with ``layer``, ``cut`` and ``ranks``).
    projection
        ``"svd"`` or ``"subspace"`` (see the module docstring).

    Examples
    --------
    >>> import torch, tnconv
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3))
    >>> small, rep = tnconv.truncate_model(net, cut="out|in,kh,kw", max_bond=2)
    >>> with torch.no_grad():
    ...     _ = small[0].weight.add_(torch.randn_like(small[0].weight))
    >>> Projector(small, rep)(small)
    >>> int(torch.linalg.matrix_rank(small[0].weight.reshape(8, -1)))
    2
    """

    def __init__(self, model: nn.Module, truncation: Sequence[dict[str, Any]], *,
                 projection: str = "svd") -> None:
        if projection not in PROJECTIONS:
            raise ValueError(f"unknown projection {projection!r}; valid: {', '.join(PROJECTIONS)}")
        self.names = []
        self.steps: dict[str, list[_CutProjection]] = {}
        for row in _check_truncation(model, truncation):
            name = row["layer"]
            module = model.get_submodule(name)
            cuts = [c.strip() for c in str(row["cut"]).split(";")]
            ranks = row.get("ranks") or [row["rank"]]
            if isinstance(ranks, str):
                ranks = [int(r) for r in ranks.split(";")]
            if len(ranks) != len(cuts):
                raise ValueError(f"truncation row of {name!r}: {len(cuts)} cuts but ranks {ranks}")
            w = module.weight.detach()
            steps = []
            for c, r in zip(cuts, ranks):
                steps.append(_CutProjection(w, c, int(r), projection))
            if name not in self.steps:
                self.names.append(name)
            # a layer truncated again later: its projections follow in the same order
            self.steps.setdefault(name, []).extend(steps)

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> None:
        for name in self.names:
            module = model.get_submodule(name)
            w = module.weight.detach()
            for step in self.steps[name]:
                w = step(w)
            module.weight.copy_(w)


def retrain(
    model: nn.Module,
    train_data: Any,
    *,
    epochs: int,
    keep_truncation: bool = False,
    truncation: Sequence[dict[str, Any]] | None = None,
    projection: str = "svd",
    eval_data: Any = None,
    inplace: bool = False,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
    **fit_options: Any,
) -> tuple[nn.Module, Records]:
    """Retrain a (truncated) model and record its accuracy per epoch: the recovery curve.

    Parameters
    ----------
    model
        The model to retrain; copied first unless ``inplace``.
    train_data
        An :class:`tnconv.data.ImageDataset` of training images.
    epochs
        Epochs of retraining.
    keep_truncation
        Project the truncated kernels back onto their kept rank after every step, so the
        retrained model stays compressed (module docstring).
    truncation
        Which kernels and ranks to keep: the report of :func:`tnconv.truncate_model`. Default:
        the rows that ``truncate_model`` attached to the model it returned (those of every
        truncation applied to it, in order).
    projection
        ``"svd"`` (best rank-r kernel each step) or ``"subspace"`` (fixed singular vectors).
    eval_data
        Evaluated before retraining and after every epoch.
    inplace
        Retrain ``model`` itself.
    device, seed, progress
        Passed to :func:`tnconv.train.fit`.
    **fit_options
        Further options of :func:`tnconv.train.fit` (``lr``, ``optimizer``, ``schedule``,
        ``batch_size``, ...). Default learning rate: 0.02 (fine-tuning, not training from
        scratch).

    Returns
    -------
    model : torch.nn.Module
        The retrained model.
    curve : Records
        One row per epoch from 0 (before retraining): ``epoch``, ``accuracy``, ``loss`` (on
        ``eval_data``; ``None`` without it), ``train_loss``, ``train_accuracy`` (``None`` at
        epoch 0), ``keep_truncation``.

    Examples
    --------
    >>> import tnconv  # doctest: +SKIP
    >>> small, rep = tnconv.truncate_model(model, cut="out,kh|in,kw", keep=0.1)  # doctest: +SKIP
    >>> small, curve = tnconv.retrain(small, train, epochs=2, eval_data=test,
    ...                               keep_truncation=True)  # doctest: +SKIP
    >>> [round(r["accuracy"], 3) for r in curve]  # doctest: +SKIP
    [0.412, 0.887, 0.902]
    """
    from ..runtime import resolve_device
    from ..train import evaluate, fit

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if truncation is None:
        truncation = getattr(model, REPORT_ATTR, None)
    if keep_truncation and not truncation:
        raise ValueError("keep_truncation=True needs the truncation report: pass "
                         "truncation=report from tnconv.truncate_model, or a model it returned")
    target = model if inplace else copy.deepcopy(model)
    if device is not None:
        device = resolve_device(device)  # "auto" as in fit; the projections live there too
        target.to(device)
    step = Projector(target, truncation, projection=projection) if keep_truncation else None
    fit_options.setdefault("lr", 0.02)

    def measure() -> tuple[float | None, float | None]:
        if eval_data is None:
            return None, None
        res = evaluate(target, eval_data)
        return res["accuracy"], res["loss"]

    acc0, loss0 = measure()
    curve = Records([{"epoch": 0, "accuracy": acc0, "loss": loss0, "train_loss": None,
                      "train_accuracy": None, "keep_truncation": keep_truncation}])
    history = fit(target, train_data, epochs=epochs, eval_data=eval_data, device=device,
                  seed=seed, progress=progress, step_callback=step, **fit_options)
    for rec in history:
        curve.append({"epoch": int(rec["epoch"]), "accuracy": rec.get("eval_accuracy"),
                      "loss": rec.get("eval_loss"), "train_loss": rec["train_loss"],
                      "train_accuracy": rec["train_accuracy"], "keep_truncation": keep_truncation})
    if truncation:
        setattr(target, REPORT_ATTR, truncation)
    return target, curve
