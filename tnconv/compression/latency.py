"""Timing forward passes: the latencies of :func:`tnconv.compress`'s report and candidates.

:func:`measure_latencies` times several models in interleaved rounds (one pass of each per
round, after warm-up rounds, the median kept), so that a change of the machine's load during
the measurement affects every model alike; :func:`measure_latency` times one.
:func:`allocation_timer` gives ``allocate="sensitivity"`` a function timing the models that
candidate allocations make, all in the same rounds.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..runtime import model_device, resolve_device
from .candidates import LayerChoices, Option, swap_layer

__all__ = ["measure_latency", "measure_latencies", "allocation_timer"]


def measure_latency(model: nn.Module, input_size: Sequence[int], *, batch: int = 256,
                    repeats: int = 5, warmup: int = 2, device: Any = None) -> float:
    """Median seconds of one forward pass of a ``batch`` of zeros, after ``warmup`` passes.

    Runs in eval mode under ``no_grad`` on the model's device (CUDA is synchronised around
    every pass); the model's mode is restored. :func:`measure_latencies` times several models
    in turn, so that they share the machine's load.

    Examples
    --------
    >>> import torch
    >>> measure_latency(torch.nn.Conv2d(1, 2, 3), (1, 8, 8), batch=2, repeats=1) > 0
    True
    """
    return measure_latencies([model], input_size, batch=batch, repeats=repeats, warmup=warmup,
                             device=device)[0]


def measure_latencies(models: Sequence[nn.Module], input_size: Sequence[int], *,
                      batch: int = 256, repeats: int = 5, warmup: int = 2,
                      device: Any = None) -> list[float]:
    """Median seconds of one forward pass of each model, timed in interleaved rounds.

    Each of ``warmup + repeats`` rounds runs one pass of every model in turn (a ``batch`` of
    zeros of ``input_size``, eval mode, ``no_grad``, CUDA synchronised), so a change of the
    machine's load during the measurement affects every model alike; the first ``warmup``
    rounds are not counted. Modes are restored.

    Examples
    --------
    >>> import torch
    >>> big, small = torch.nn.Conv2d(1, 64, 5), torch.nn.Conv2d(1, 2, 1)
    >>> t = measure_latencies([big, small], (1, 32, 32), batch=8, repeats=3)
    >>> len(t), all(v > 0 for v in t)
    (2, True)
    """
    if not models:
        return []
    dev = model_device(models[0]) if device is None else resolve_device(device)
    x = torch.zeros(batch, *input_size, device=dev)
    modes = [m.training for m in models]
    times: list[list[float]] = [[] for _ in models]
    try:
        with torch.no_grad():
            for m in models:
                m.eval()
            for k in range(warmup + repeats):
                for m, store in zip(models, times, strict=True):
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    t0 = time.perf_counter()
                    m(x)
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    if k >= warmup:
                        store.append(time.perf_counter() - t0)
    finally:
        for m, was in zip(models, modes, strict=True):
            m.train(was)
    return [statistics.median(t) for t in times]


def allocation_timer(model: nn.Module, layers: Sequence[LayerChoices],
                     input_size: Sequence[int] | None, device: torch.device, *,
                     batch: int = 256, repeats: int = 5, warmup: int = 1
                     ) -> Callable[[list[list[Option]]], list[float]] | None:
    """``[options, ...] -> [seconds, ...]``: the latencies of the models allocations make.

    Each allocation (one option per layer of ``layers``) is applied to its own copy of
    ``model`` on ``device`` (the model is not modified) and all the copies are timed together
    by :func:`measure_latencies`. ``None`` when ``input_size`` is unknown.

    Examples
    --------
    >>> import torch
    >>> from tnconv.compression.candidates import dense_option, layer_families
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3))
    >>> lc = LayerChoices("0", dense_option((8, 4, 3, 3), 8, None),
    ...                   layer_families(net[0].weight, 8, None, method="svd"))
    >>> time_all = allocation_timer(net, [lc], (4, 16, 16), torch.device("cpu"), batch=2)
    >>> t = time_all([[lc.dense], [lc.families[0].option((2,))]])
    >>> len(t), all(v > 0 for v in t), allocation_timer(net, [lc], None, torch.device("cpu"))
    (2, True, None)
    """
    if input_size is None:
        return None
    size = tuple(input_size)

    def time_all(allocations: list[list[Option]]) -> list[float]:
        trials = []
        for options in allocations:
            trial = copy.deepcopy(model).to(device)
            for lc, opt in zip(layers, options, strict=True):
                trial = swap_layer(trial, lc.name, opt)[0]
            trials.append(trial)
        return measure_latencies(trials, size, batch=batch, repeats=repeats, warmup=warmup,
                                 device=device)

    return time_all
