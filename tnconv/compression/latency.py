"""Timing forward passes of inference forms: :func:`tnconv.compress`'s report, its candidates
and its latency budget.

What is timed is what is deployed: each model's inference form (:func:`tnconv.for_inference`:
plain convolutions on the faster path, batch norm folded), not the training form whose
factored layers rebuild their kernels through opt_einsum. Every timing goes through the one
timer of the package, :func:`tnconv.inference.timing.interleaved_medians`: one pass of each
model per round, after warm-up rounds, the median kept, so that a change of the machine's
load during the measurement affects every model alike.

* :func:`measure_latencies` times several models in the same rounds, :func:`measure_latency`
  one; :func:`inference_forms` builds the forms they time;
* :func:`allocation_timer` gives ``allocate="sensitivity"`` a function timing the models that
  candidate allocations make, all in the same rounds;
* :func:`meet_latency` searches a budget fraction whose compressed model's inference form
  runs within a fraction of the dense one's (``compress(..., latency=0.5)``);
  :func:`check_latency` validates that ``latency=`` argument.

Examples
--------
>>> import torch
>>> big, small = torch.nn.Conv2d(1, 64, 5), torch.nn.Conv2d(1, 2, 1)
>>> t = measure_latencies([big, small], (1, 32, 32), batch=8, repeats=3)
>>> len(t), all(v > 0 for v in t)
(2, True)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..inference import for_inference, interleaved_medians
from ..runtime import model_device, resolve_device
from .candidates import LayerChoices, Option, swap_layer

__all__ = ["measure_latency", "measure_latencies", "inference_forms", "allocation_timer",
           "check_latency", "meet_latency", "LatencyTrial", "SEARCH_STEPS"]

#: Bisection steps of :func:`meet_latency` after its first guess and its cheapest fraction.
SEARCH_STEPS = 4
_BUILD_BATCH = 2  # example batch of a form whose paths are not measured (batch-independent)


def _check_size(input_size: Any, batch: Any) -> tuple[int, ...]:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an int >= 1, got {batch!r}")
    try:
        size = tuple(int(d) for d in input_size)
    except (TypeError, ValueError):
        raise TypeError(f"input_size must be a sequence of ints (C, H, W), got "
                        f"{input_size!r}") from None
    if not size or min(size) < 1:
        raise ValueError(f"input_size must be positive sizes (C, H, W), got {input_size!r}")
    return size


def inference_forms(models: Sequence[nn.Module], input_size: Sequence[int], *,
                    batch: int = 256, device: Any = None, path: str = "measured"
                    ) -> list[nn.Module]:
    """The inference form of each model (:func:`tnconv.for_inference`) for ``batch`` images.

    ``path="measured"`` times each factorized layer's two paths on its input from a batch of
    ``batch`` zeros of ``input_size`` (the batch the forms will be timed at); ``"flops"``
    (and ``"dense"``, ``"factored"``) do not depend on the batch, so a batch of 2 builds
    them. The models are not modified (a model in training mode gets the form of its eval
    mode, without a warning: its mode is restored).

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)).train()
    >>> [form] = inference_forms([net], (1, 8, 8), batch=4)
    >>> [type(m).__name__ for m in form], net.training
    (['Conv2d', 'Identity'], True)
    """
    size = _check_size(input_size, batch)
    if not models:
        return []
    dev = model_device(models[0]) if device is None else resolve_device(device)
    n = batch if path == "measured" else min(batch, _BUILD_BATCH)
    x = torch.zeros(n, *size, device=dev)
    out = []
    for m in models:
        was = m.training
        try:
            out.append(for_inference(m.eval(), x, device=dev, path=path))
        finally:
            m.train(was)
    return out


def measure_latencies(models: Sequence[nn.Module], input_size: Sequence[int], *,
                      batch: int = 256, repeats: int = 5, warmup: int = 2,
                      device: Any = None, inference: bool = True, path: str = "measured"
                      ) -> list[float]:
    """Median seconds of one forward pass of each model, timed in interleaved rounds.

    Parameters
    ----------
    models
        The models (not modified; their modes are restored).
    input_size
        ``(C, H, W)``: each pass runs a ``batch`` of zeros of this size under ``no_grad``.
    batch, repeats, warmup
        Batch size; counted rounds and untimed rounds first
        (:func:`tnconv.inference.timing.interleaved_medians`, CUDA synchronised).
    device
        Default the first model's.
    inference, path
        Time each model's inference form (:func:`inference_forms` with ``path``; default),
        or the model itself in eval mode (``inference=False``).

    Returns
    -------
    list of float
        Seconds per pass, one per model.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8))
    >>> t = measure_latencies([net, net], (1, 16, 16), batch=4, repeats=3, inference=False)
    >>> len(t), all(v > 0 for v in t)
    (2, True)
    """
    size = _check_size(input_size, batch)
    if not models:
        return []
    dev = model_device(models[0]) if device is None else resolve_device(device)
    timed = (inference_forms(models, size, batch=batch, device=dev, path=path)
             if inference else list(models))
    x = torch.zeros(batch, *size, device=dev)
    modes = [m.training for m in timed]
    try:
        for m in timed:
            m.eval()
        with torch.no_grad():
            return interleaved_medians([lambda m=m: m(x) for m in timed], repeats=repeats,
                                       warmup=warmup, device=dev)
    finally:
        for m, was in zip(timed, modes, strict=True):
            m.train(was)


def measure_latency(model: nn.Module, input_size: Sequence[int], *, batch: int = 256,
                    repeats: int = 5, warmup: int = 2, device: Any = None,
                    inference: bool = True) -> float:
    """Median seconds of one forward pass of ``model``'s inference form (or of the model
    itself, ``inference=False``): :func:`measure_latencies` of one model.

    Examples
    --------
    >>> import torch
    >>> measure_latency(torch.nn.Conv2d(1, 2, 3), (1, 8, 8), batch=2, repeats=1) > 0
    True
    """
    return measure_latencies([model], input_size, batch=batch, repeats=repeats, warmup=warmup,
                             device=device, inference=inference)[0]


def allocation_timer(model: nn.Module, layers: Sequence[LayerChoices],
                     input_size: Sequence[int] | None, device: torch.device, *,
                     batch: int = 256, repeats: int = 5, warmup: int = 1
                     ) -> Callable[[list[list[Option]]], list[float]] | None:
    """``[options, ...] -> [seconds, ...]``: the latencies of the models allocations make.

    Each allocation (one option per layer of ``layers``) is applied to its own copy of
    ``model`` on ``device`` (the model is not modified), and the inference forms of all the
    copies are timed together by :func:`measure_latencies`. ``None`` when ``input_size`` is
    unknown.

    The forms take each factorized layer's path by FLOPs (``path="flops"``), not by timing
    it: a sensitivity run times ten to twenty candidates, and measuring every layer's two
    paths in each would cost more than timing the candidates themselves (seconds per
    candidate on resnet20 at batch 256 on two cores). The candidates are ranked by these
    times; the kept model's reported latency and the latency budget (:func:`meet_latency`)
    use the measured paths.

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
                                 device=device, path="flops")

    return time_all


def check_latency(latency: Any) -> float | None:
    """The latency budget of ``compress(..., latency=)``: ``None`` for ``True`` / ``False``
    (time the models, or not), else a fraction in (0, 1) of the dense inference form's
    latency.

    Examples
    --------
    >>> check_latency(True), check_latency(0.5)
    (None, 0.5)
    >>> check_latency(1.5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: latency=1.5 is not a latency budget: give True/False (time the models or ...
    """
    if isinstance(latency, bool):
        return None
    if not isinstance(latency, (int, float)):
        raise TypeError("latency must be True/False or a fraction in (0, 1) of the dense "
                        f"model's latency, got {type(latency).__name__} {latency!r}")
    if not (math.isfinite(latency) and 0 < latency < 1):
        raise ValueError(f"latency={latency!r} is not a latency budget: give True/False (time "
                         "the models or not) or a fraction in (0, 1) of the dense model's "
                         "latency")
    return float(latency)


@dataclass
class LatencyTrial:
    """One budget fraction tried by :func:`meet_latency` and its measured latencies."""

    fraction: float
    dense_s: float
    compressed_s: float

    @property
    def ratio(self) -> float:
        """``compressed_s / dense_s``."""
        return self.compressed_s / self.dense_s

    def to_dict(self) -> dict[str, float]:
        """The fields and the ratio."""
        return {**asdict(self), "ratio": self.ratio}


def meet_latency(make: Callable[[float], tuple[nn.Module, Any]], model: nn.Module,
                 target: float, lowest: float, *, input_size: Sequence[int], batch: int,
                 device: torch.device, steps: int = SEARCH_STEPS, repeats: int = 9,
                 warmup: int = 2, min_sample_s: float = 0.05
                 ) -> tuple[tuple[nn.Module, Any], LatencyTrial, list[LatencyTrial]]:
    """The largest budget fraction whose model runs within ``target`` of ``model``'s latency.

    ``make(fraction)`` compresses at a fraction (of FLOPs, say) and returns ``(model,
    anything)``. Each model tried is timed in its inference form (measured paths, at
    ``batch``) in the same interleaved rounds as the dense inference form, which is built
    once; each sample repeats a pass for at least ``min_sample_s`` (load spikes of a shared
    machine average out). The search: ``fraction = target`` first (when the convolutions
    dominate, the latency ratio follows the FLOPs fraction); when that is too slow,
    ``lowest`` (the cheapest fraction) next; then ``steps`` geometric bisections between the
    largest fraction that met the target and the smallest that did not (or 1). The latency
    is not assumed monotone in the fraction: the kept model is the largest fraction
    *measured* within the target, so its recorded ratio is at most ``target`` by
    construction.

    Returns
    -------
    (made, kept, trials)
        ``make``'s result for the kept fraction, its :class:`LatencyTrial` and every trial in
        the order tried.

    Raises
    ------
    ValueError
        No fraction tried met the target (the message gives the fastest ratio reached).

    Examples
    --------
    >>> import torch
    >>> dense = torch.nn.Sequential(torch.nn.Conv2d(8, 256, 5), torch.nn.Conv2d(256, 256, 5))
    >>> make = lambda f: (torch.nn.Conv2d(8, 2, 1), f)
    >>> (_, f), kept, trials = meet_latency(make, dense, 0.5, 0.01, input_size=(8, 24, 24),
    ...                                     batch=4, device=torch.device("cpu"), steps=1)
    >>> kept.ratio <= 0.5, f == kept.fraction, len(trials)
    (True, True, 2)
    """
    size = _check_size(input_size, batch)
    if not 0 < target < 1 or not 0 < lowest <= 1:
        raise ValueError(f"target and lowest must be fractions in (0, 1) and (0, 1], got "
                         f"{target!r} and {lowest!r}")
    x = torch.zeros(batch, *size, device=device)
    [dense] = inference_forms([model], size, batch=batch, device=device)
    trials: list[LatencyTrial] = []
    kept: list[Any] = []  # [trial, made] of the largest fraction met so far

    def trial(fraction: float) -> bool:
        result = make(fraction)
        [form] = inference_forms([result[0]], size, batch=batch, device=device)
        with torch.no_grad():
            t_dense, t_small = interleaved_medians([lambda: dense(x), lambda: form(x)],
                                                   repeats=repeats, warmup=warmup,
                                                   device=device, min_sample_s=min_sample_s)
        trials.append(LatencyTrial(fraction, t_dense, t_small))
        met = trials[-1].ratio <= target
        if met and (not kept or fraction > kept[0].fraction):
            kept[:] = [trials[-1], result]
        return met

    lo, hi = None, 1.0
    first = min(max(target, lowest), 1.0)
    if trial(first):
        lo = first
    else:
        hi = first
        if lowest < first and trial(lowest):
            lo = lowest
    for _ in range(steps if lo is not None else 0):
        mid = math.sqrt(lo * hi)
        if trial(mid):
            lo = mid
        else:
            hi = mid
    if not kept:
        fastest = min(trials, key=lambda t: t.ratio)
        raise ValueError(f"latency={target:g} cannot be met: the fastest compressed model "
                         f"tried runs at {fastest.ratio:.3f} of the dense inference form's "
                         f"latency (batch {batch}, {device}); ask for more than that")
    return kept[1], kept[0], trials
