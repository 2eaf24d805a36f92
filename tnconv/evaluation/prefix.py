"""Suffix evaluation from cached activations: re-run only the part of a model after a layer.

A truncation sweep changes one kernel at a time, so everything before the stage that holds it
gives the same activations for every row. :class:`PrefixRunner` splits a model into a chain of
*stages* -- its top-level children, with :class:`torch.nn.Sequential` children opened up
recursively (a ResNet becomes ``conv1, bn1, relu, maxpool, layer1.0, ..., layer4.2, avgpool,
fc``) -- checks numerically that running the chain reproduces ``model(x)`` bit for bit, caches
the activations at the input of one stage, and evaluates the stages from there on.

Rules
-----
* The chain is verified once on the first batch in eval mode with :func:`torch.equal`. If the
  opened-up chain does not reproduce the model, the top-level children are tried; if neither
  does (a custom ``forward``), every evaluation runs the full model (``mode == "full"``).
* The one special case is a :class:`torch.nn.Linear` stage receiving a tensor with more than 2
  dimensions: it gets ``torch.flatten(x, 1)`` first, as in torchvision's ResNet forward (the
  verification covers it).
* The evaluation data is cut into the same batches for the cache and for the full model, and the
  cache keeps the very tensors (dtype included, under autocast) that the full forward pass
  would feed to the stage, so a suffix evaluation gives exactly the full evaluation's logits.
* Only one stage's cache lives at a time; :meth:`PrefixRunner.advance` moves it forward through
  the (unmodified) stages and frees the old one. A cache larger than ``cache_bytes`` (default
  :func:`default_cache_bytes`: a quarter of the device's memory) is not kept: those layers are
  evaluated on the full model instead, streaming the data, with a warning.

Data
----
Any form of :mod:`tnconv.data.loaders`. An ImageDataset or a tensor pair is moved to the device
once when it fits in ``cache_bytes`` (else its batches are moved as they are used); a dataset or
DataLoader is streamed, batch by batch, for every full evaluation, so the data never has to fit
in memory; a one-shot iterator of batches is read once and kept in host memory. The cache holds
each batch's labels with its activations, so a DataLoader that reshuffles still scores each
image against its own label.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import as_tensors, loaders
from ..runtime import autocast

__all__ = ["PrefixRunner", "default_cache_bytes", "model_stages", "Metrics"]


def default_cache_bytes(device: str | torch.device) -> int:
    """The default activation-cache budget: a quarter of the device's memory (of the physical
    RAM on the CPU).

    Examples
    --------
    >>> default_cache_bytes("cpu") > 0
    True
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 4
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return 4 << 30

#: Accuracy, mean loss and count of one evaluation.
Metrics = dict[str, float]


def _open_up(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    out = []
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if type(child) is nn.Sequential:
            out.extend(_open_up(child, full + "."))
        else:
            out.append((full, child))
    return out


def model_stages(model: nn.Module, *, open_sequential: bool = True
                 ) -> list[tuple[str, nn.Module]]:
    """The candidate chain of stages of a model (not yet verified; see :class:`PrefixRunner`).

    Examples
    --------
    >>> m = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), nn.Flatten())
    >>> [n for n, _ in model_stages(m)], [n for n, _ in model_stages(m, open_sequential=False)]
    (['0.0', '0.1', '1'], ['0', '1'])
    """
    if open_sequential:
        return _open_up(model, "")
    return list(model.named_children())


def _run_stage(stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(stage, nn.Linear) and x.ndim > 2:
        x = torch.flatten(x, 1)
    return stage(x)


class PrefixRunner:
    """Evaluate a model, or only its stages from a cached activation on, on fixed data.

    Parameters
    ----------
    model
        The model, in eval mode on ``device`` (the runner does not copy it: swap kernels in
        place and evaluate).
    data
        Any data form of :mod:`tnconv.data.loaders` (module docstring: what is moved, what is
        streamed).
    batch_size
        Images per batch (the same batches for every evaluation; a DataLoader keeps its own).
    device
        Where to evaluate.
    amp
        bf16 autocast (CUDA only).
    cache_bytes
        Largest stage cache kept (bytes); ``None``: no limit.
    use_prefix
        ``False`` forces full evaluations (the naive reference).

    Attributes
    ----------
    mode : str
        ``"prefix"`` (verified chain of stages) or ``"full"``.
    stages : list of (str, nn.Module)

    Examples
    --------
    >>> torch.manual_seed(0) and None
    >>> m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)).eval()
    >>> data = (torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,)))
    >>> run = PrefixRunner(m, data, batch_size=4, device="cpu")
    >>> run.mode, run.evaluate()["accuracy"] == run.evaluate_from(3)["accuracy"]
    ('prefix', True)
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        *,
        batch_size: int = 1000,
        device: str | torch.device = "cpu",
        amp: bool = False,
        cache_bytes: int | None = None,
        use_prefix: bool = True,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.model = model
        self.device = torch.device(device)
        self.source: Any = loaders.batches(data, batch_size)
        if self.source.in_memory:  # moved to the device once when it fits the budget
            x, y = as_tensors(data)
            y = y.long()  # cross_entropy wants int64 class indices
            if cache_bytes is None or x.element_size() * x.numel() <= cache_bytes:
                x, y = x.to(self.device), y.to(self.device)
            self.source = [(x[i:i + batch_size], y[i:i + batch_size])
                           for i in range(0, len(y), batch_size)]
        elif self.source.one_shot:  # read once, kept on the host
            self.source = list(self.source)
        self.n: int | None = loaders.data_length(data)
        self.batch_size = batch_size
        self.amp = bool(amp) and self.device.type == "cuda"
        self.cache_bytes = cache_bytes
        self._warned = False
        self._labels_checked = False
        self._cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._cache_stage = -1
        self._sizes: dict[int, int] = {}
        self.stages: list[tuple[str, nn.Module]] = []
        self.mode = "full"
        loaders.check_model_input(model, self._first_images())
        if use_prefix:
            for open_seq in (True, False):
                stages = model_stages(model, open_sequential=open_seq)
                if stages and self._verify(stages):
                    self.stages, self.mode = stages, "prefix"
                    break

    # -- helpers ---------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, enabled=self.amp)

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        non_blocking = self.device.type == "cuda"
        for x, y in self.source:
            yield (x.to(self.device, non_blocking=non_blocking),
                   y.to(self.device, non_blocking=non_blocking))

    def _first_images(self) -> torch.Tensor:
        return next(iter(self._batches()))[0]

    @torch.no_grad()
    def _verify(self, stages: list[tuple[str, nn.Module]]) -> bool:
        x = self._first_images()
        with self._autocast():
            try:
                ref = self.model(x)
                h = x
                for _, stage in stages:
                    h = _run_stage(stage, h)
            except Exception:  # a chain that cannot even run is simply not usable
                return False
        return h.shape == ref.shape and torch.equal(h, ref)

    def stage_of(self, module: nn.Module) -> int | None:
        """Index of the stage that holds ``module`` (``None`` in full mode or if not found)."""
        for i, (_, stage) in enumerate(self.stages):
            if stage is module or any(m is module for m in stage.modules()):
                return i
        return None

    @staticmethod
    def _metrics(correct: int, loss_sum: float, n: int) -> Metrics:
        return {"accuracy": correct / n, "loss": loss_sum / n, "n": n}

    @staticmethod
    def _score(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = logits.float()
        correct = (logits.argmax(1) == y).sum()
        loss = F.cross_entropy(logits, y, reduction="sum")
        return correct, loss

    # -- evaluation ------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> Metrics:
        """Accuracy and mean cross-entropy of the full model on the data."""
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        loss = torch.zeros((), device=self.device, dtype=torch.float64)
        n = 0
        with self._autocast():
            for x, y in self._batches():
                logits = self.model(x)
                if not self._labels_checked:
                    loaders.check_sample_labels(y, logits.shape[-1], offset=n)
                c, ls = self._score(logits, y)
                correct += c
                loss += ls.double()
                n += len(y)
        if n == 0:
            raise ValueError("the evaluation data is empty")
        self._labels_checked, self.n = True, n
        return self._metrics(int(correct), float(loss), n)

    def cache_size(self, stage: int) -> int:
        """Bytes of the cache at the input of ``stage`` (computed by one batch's pass)."""
        if stage in self._sizes:
            return self._sizes[stage]
        if self.n is None:
            self.evaluate()  # counts the images
        with torch.no_grad(), self._autocast():
            h = self._first_images()
            for _, mod in self.stages[:stage]:
                h = _run_stage(mod, h)
        self._sizes[stage] = math.ceil(h.element_size() * h[0].numel() * self.n)
        return self._sizes[stage]

    def _over_budget(self, stage: int) -> None:
        if not self._warned:
            warnings.warn(
                f"the prefix cache at stage {stage} ({self.stages[stage][0]!r}) needs "
                f"{self.cache_size(stage) / 2**20:.1f} MiB, over the budget cache_bytes="
                f"{self.cache_bytes} ({self.cache_bytes / 2**20:.1f} MiB): layers in this stage "
                "are evaluated by streaming the data through the full model (same results, "
                "slower); raise cache_bytes to cache them", stacklevel=3)
            self._warned = True

    @torch.no_grad()
    def advance(self, stage: int) -> bool:
        """Hold the activations at the input of ``stage`` (moving forward from the current cache).

        Returns ``False`` (and holds nothing) in full mode or when the cache would exceed
        ``cache_bytes``; the caller then evaluates the full model.
        """
        if self.mode != "prefix":
            return False
        if stage == self._cache_stage and self._cache is not None:
            return True
        if self.cache_bytes is not None and self.cache_size(stage) > self.cache_bytes:
            self._cache, self._cache_stage = None, -1
            self._over_budget(stage)
            return False
        if self._cache is not None and self._cache_stage <= stage:
            start, cache = self._cache_stage, iter(self._cache)
        else:  # streamed from the data: only the new cache is ever held
            start, cache = 0, self._batches()
        self._cache = None  # free the old cache as the new one is built
        with self._autocast():
            new = []
            for h, y in cache:
                for _, mod in self.stages[start:stage]:
                    h = _run_stage(mod, h)
                new.append((h, y))
        del cache
        self._cache, self._cache_stage = new, stage
        return True

    @torch.no_grad()
    def evaluate_from(self, stage: int) -> Metrics:
        """Evaluate the stages ``stage, stage+1, ...`` from the cached input of ``stage``."""
        if not self.advance(stage):
            return self.evaluate()
        assert self._cache is not None
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        loss = torch.zeros((), device=self.device, dtype=torch.float64)
        with self._autocast():
            for h, y in self._cache:
                h = h.clone()  # a stage may work in place on its input; keep the cache intact
                for _, mod in self.stages[stage:]:
                    h = _run_stage(mod, h)
                c, ls = self._score(h, y)
                correct += c
                loss += ls.double()
        return self._metrics(int(correct), float(loss), sum(len(y) for _, y in self._cache))

    def release(self) -> None:
        """Free the cached activations."""
        self._cache, self._cache_stage = None, -1
