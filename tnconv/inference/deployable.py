"""``tnconv.for_inference``: the form of a model to deploy.

A copy of the model in eval mode, on the target device and dtype, in which

1. every factorized convolution (:class:`tnconv.MPSConv2d`, :class:`tnconv.TuckerConv2d`,
   :class:`tnconv.CPConv2d`) becomes plain ``torch.nn`` modules
   (:mod:`tnconv.layers.plain`): its dense path with the kernel built once (an
   ``nn.Conv2d``), or its factored path (an ``nn.Sequential`` of ``nn.Conv2d``), whichever
   is *measured* faster on the layer's own input from ``example_input`` (so on that device,
   dtype and batch size; the two are timed in interleaved rounds, :mod:`.timing`);
2. batch norm is folded into the convolution before it (:mod:`.fold`), the last factor for a
   factored layer.

No opt_einsum or path choice is left in ``forward``: the result exports to ONNX, traces with
``torch.export`` and compiles with ``torch.compile(fullgraph=True)``. Its output on
``example_input`` is checked against the eval-mode model, and what was chosen, timed and
folded is in the returned model's ``inference_report`` (:class:`InferenceReport`).

Examples
--------
>>> import torch, tnconv
>>> net = tnconv.cnn4(10, 1).eval()
>>> small, _ = tnconv.tensorize(net, kind="tucker", progress=False)
>>> fast = for_inference(small, torch.randn(4, 1, 28, 28))
>>> sorted({type(m).__name__ for m in fast.modules()} & {"TuckerConv2d", "BatchNorm2d"})
[]
>>> fast.inference_report.max_abs_diff < 1e-3
True
"""

from __future__ import annotations

import copy
import math
import statistics
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..layers.base import FactorizedConv2d
from ..layers.mpo_linear import MPOLinear
from ..layers.plain import dense_module, factored_module
from ..model_layers import replace_layer
from ..runtime import model_device, resolve_device
from .fold import fold_batchnorm
from .timing import interleaved_samples

__all__ = ["for_inference", "InferenceReport", "INFERENCE_PATHS", "MEASURE_MARGIN",
           "MEMORY_FORMATS"]

#: The layers :func:`for_inference` replaces by plain modules (an :class:`~tnconv.MPOLinear`
#: becomes its dense ``nn.Linear``: it has no plain factored form).
_FACTORED = (FactorizedConv2d, MPOLinear)

#: How :func:`for_inference` picks each factorized layer's form.
INFERENCE_PATHS: tuple[str, ...] = ("measured", "flops", "dense", "factored")
#: The weight layouts :func:`for_inference` accepts (``"auto"``: the one measured faster).
MEMORY_FORMATS: tuple[str, ...] = ("auto", "channels_last", "contiguous")
_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
#: A measured ratio within this factor of 1 is noise: the path with fewer multiply-adds is kept.
MEASURE_MARGIN = 1.1
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@dataclass
class InferenceReport:
    """What :func:`for_inference` did.

    Attributes
    ----------
    paths
        Per factorized layer (dotted name): ``"dense"`` or ``"factored"``.
    seconds
        Per measured layer: ``{"dense": s, "factored": s, "paired_ratio": r}``, the medians of
        interleaved rounds on the layer's input and the median of the per-round ratios
        factored / dense (``path="measured"`` only). A ratio within :data:`MEASURE_MARGIN` of
        1 is noise, and the path with fewer multiply-adds is kept.
    folded
        The ``(conv, batch norm)`` pairs folded.
    max_abs_diff
        Largest absolute difference of the output on ``example_input`` from the eval-mode
        model's (float64 of both).
    memory_format
        ``"channels_last"`` or ``"contiguous"``: the layout of the copy's 4-D weights.
    format_seconds
        ``{"channels_last": s, "contiguous": s}``: the whole copy timed in both layouts on
        ``example_input`` (``memory_format="auto"`` only).
    device, dtype, batch
        Where and at what batch size it was measured.
    """

    paths: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    folded: list[tuple[str, str]] = field(default_factory=list)
    max_abs_diff: float = 0.0
    memory_format: str = "contiguous"
    format_seconds: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    dtype: str = "float32"
    batch: int = 0


def _check_input(example_input: Any, dev: torch.device) -> torch.Tensor:
    if not isinstance(example_input, torch.Tensor):
        raise TypeError("example_input must be a torch.Tensor (a batch of the inputs the "
                        f"model will run on), got {type(example_input).__name__}")
    if not example_input.is_floating_point():
        raise TypeError(f"example_input must be a floating-point tensor, got dtype "
                        f"{example_input.dtype}")
    if example_input.dim() < 2 or example_input.numel() == 0:
        raise ValueError("example_input must be a non-empty batch [N, ...], got shape "
                         f"{tuple(example_input.shape)}")
    if example_input.device.type != dev.type or (
            dev.index is not None and example_input.device != dev):
        raise ValueError(f"example_input is on {example_input.device} but the inference form "
                         f"runs on {dev}; move it there (or pass device=...)")
    return example_input


def _run(model: nn.Module, x: torch.Tensor) -> Any:
    try:
        with torch.no_grad():
            return model(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"example_input of shape {tuple(x.shape)} and dtype {x.dtype} does "
                         f"not fit the model: {first}") from exc


def _layer_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input of every factorized layer on ``x`` (the model called once)."""
    found: dict[str, torch.Tensor] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, _FACTORED):
            def hook(mod: nn.Module, inp: tuple[Any, ...], name: str = name) -> None:
                found.setdefault(name, inp[0].detach())
            hooks.append(m.register_forward_pre_hook(hook))
    try:
        _run(model, x)
    finally:
        for h in hooks:
            h.remove()
    return found


def _choose(layer: FactorizedConv2d | MPOLinear, x: torch.Tensor | None, path: str,
            dev: torch.device, fmt: torch.memory_format
            ) -> tuple[nn.Module, str, dict[str, float] | None]:
    dense, factored = dense_module(layer).eval(), factored_module(layer)
    if factored is None or path == "dense":
        return dense, "dense", None
    factored.eval()
    if x is not None and x.dim() == 4:  # measured in the layout the copy will run in
        dense, factored = dense.to(memory_format=fmt), factored.to(memory_format=fmt)
        x = x.contiguous(memory_format=fmt)
    if path == "factored":
        return factored, "factored", None
    if x is None:  # a layer example_input does not reach
        return dense, "dense", None
    # the kernel is built once: the dense path costs its convolution only
    est = layer.flops(tuple(x.shape))
    fewer = est["factored"] is not None and est["factored"] < est["dense"] - layer._kernel_flops()
    if path == "flops":
        return (factored, "factored", None) if fewer else (dense, "dense", None)
    with torch.no_grad():
        t_dense, t_fact = interleaved_samples([lambda: dense(x), lambda: factored(x)],
                                              repeats=9, warmup=2, device=dev,
                                              min_sample_s=5e-3)
    ratio = statistics.median(f / max(d, 1e-12) for f, d in zip(t_fact, t_dense, strict=True))
    seconds = {"dense": statistics.median(t_dense), "factored": statistics.median(t_fact),
               "paired_ratio": ratio}
    if abs(math.log(ratio)) < math.log(MEASURE_MARGIN):  # within the noise: by FLOPs
        faster = fewer
    else:
        faster = ratio < 1
    return (factored, "factored", seconds) if faster else (dense, "dense", seconds)


def _layout(work: nn.Module, x: torch.Tensor, memory_format: str, dev: torch.device,
            report: InferenceReport) -> nn.Module:
    """``work`` in the asked layout; for ``"auto"`` the faster of the two on ``x``."""
    if memory_format != "auto":
        report.memory_format = memory_format
        return work.to(memory_format=_FORMATS[memory_format])
    if x.dim() != 4 or not any(isinstance(m, nn.Conv2d) for m in work.modules()):
        return work
    last = copy.deepcopy(work).to(memory_format=torch.channels_last)
    with torch.no_grad():
        t_last, t_cont = interleaved_samples([lambda: last(x), lambda: work(x)], repeats=5,
                                             warmup=1, device=dev, min_sample_s=2e-2)
    ratio = statistics.median(a / max(b, 1e-12) for a, b in zip(t_last, t_cont, strict=True))
    report.format_seconds = {"channels_last": statistics.median(t_last),
                             "contiguous": statistics.median(t_cont)}
    if ratio < MEASURE_MARGIN:  # channels_last unless clearly slower: oneDNN's and cuDNN's
        report.memory_format = "channels_last"  # preferred layout for convolutions
        return last
    return work


def _max_abs_diff(a: Any, b: Any) -> float:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return max((_max_abs_diff(u, v) for u, v in zip(a, b, strict=True)), default=0.0)
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return max((_max_abs_diff(a[k], b[k]) for k in a), default=0.0)
    return 0.0


def _tolerance(reference: Any, dtype: torch.dtype) -> float:
    scale = _max_abs_diff(reference, torch.zeros(())) if isinstance(reference, torch.Tensor) \
        else 1.0
    rel = {torch.float64: 1e-9, torch.float32: 1e-3}.get(dtype, 5e-2)
    return rel * (1.0 + scale)


def _resolve(model: Any, device: Any, dtype: Any, path: Any) -> tuple[torch.device, torch.dtype]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if path not in INFERENCE_PATHS:
        raise ValueError(f"unknown path {path!r}; valid: {', '.join(INFERENCE_PATHS)}")
    if dtype is not None and dtype not in _DTYPES:
        raise TypeError(f"dtype must be one of {', '.join(map(str, _DTYPES))}, got {dtype!r}")
    dev = model_device(model) if device is None else resolve_device(device)
    if dtype is None:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()),
                     torch.float32)
    return dev, dtype


def for_inference(model: nn.Module, example_input: torch.Tensor, *,
                  device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                  path: str = "measured", fold: bool = True,
                  memory_format: str = "auto") -> nn.Module:
    """A copy of ``model`` ready to deploy: plain convolutions, batch norm folded, in eval mode.

    Parameters
    ----------
    model
        A dense, tensorized or compressed model; not modified. A model in training mode is
        copied into eval mode (batch norm uses its running statistics), with a warning.
    example_input
        A batch of the inputs the model will run on, on the target device: its batch size is
        the one the paths are measured at (dtype cast to ``dtype``).
    device, dtype
        Where and in what precision the copy runs; default the model's.
    path
        Each factorized layer's form: ``"measured"`` (the faster on the layer's input, timed),
        ``"flops"`` (the one with fewer multiply-adds: reproducible, and the tie-break of
        ``"measured"`` where the two are within 10 %), ``"dense"`` or
        ``"factored"`` (where the layer has one).
    fold
        Fold batch norm into the convolution before it.
    memory_format
        The layout of the 4-D weights: ``"channels_last"``, ``"contiguous"`` or ``"auto"``
        (both timed on ``example_input``; channels_last unless it is clearly slower). A
        convolution with channels_last weights runs channels_last whatever its input's layout:
        on a 2-core CPU this halved cnn4's dense time at batch 64 (max pooling and oneDNN's
        convolutions are much faster in it; ``benchmarks/bench_deploy.py``). The paths are
        measured in this layout (channels_last for ``"auto"``).

    Returns
    -------
    nn.Module
        The copy, whose ``inference_report`` is an :class:`InferenceReport`.

    Raises
    ------
    TypeError
        ``model`` is not a module, ``example_input`` not a floating-point tensor, or
        ``dtype`` not a floating dtype.
    ValueError
        ``example_input`` is on another device or does not fit the model; unknown ``path``.
    RuntimeError
        The copy's output differs from the model's beyond rounding (a bug: please report).

    Examples
    --------
    >>> import torch, tnconv
    >>> layer = tnconv.TuckerConv2d.from_conv(torch.nn.Conv2d(8, 8, 3), ranks=(2, 2)).eval()
    >>> plain = for_inference(layer, torch.randn(2, 8, 9, 9), path="factored")
    >>> [type(m).__name__ for m in plain], plain.inference_report.paths
    (['Conv2d', 'Conv2d', 'Conv2d'], {'': 'factored'})
    """
    dev, dtype = _resolve(model, device, dtype, path)
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"unknown memory_format {memory_format!r}; valid: "
                         f"{', '.join(MEMORY_FORMATS)}")
    fmt = torch.contiguous_format if memory_format == "contiguous" else torch.channels_last
    x = _check_input(example_input, dev).to(dtype)
    if model.training:
        warnings.warn("for_inference: the model is in training mode; the inference form is "
                      "its eval mode (batch norm with running statistics, no dropout)",
                      stacklevel=2)
    work = copy.deepcopy(model).to(device=dev, dtype=dtype).eval()
    reference = _run(work, x)
    inputs = _layer_inputs(work, x)
    report = InferenceReport(device=str(dev), dtype=str(dtype).replace("torch.", ""),
                             batch=int(x.shape[0]))
    for name, layer in [(n, m) for n, m in work.named_modules()
                        if isinstance(m, _FACTORED)]:
        new, chosen, seconds = _choose(layer, inputs.get(name), path, dev, fmt)
        work = replace_layer(work, name, new)
        report.paths[name] = chosen
        if seconds is not None:
            report.seconds[name] = seconds
    if fold:
        report.folded = fold_batchnorm(work)
    work = _layout(work, x, memory_format, dev, report)
    report.max_abs_diff = _max_abs_diff(_run(work, x), reference)
    if not report.max_abs_diff <= _tolerance(reference, dtype):
        raise RuntimeError(f"for_inference: the inference form's output differs from the "
                           f"model's by {report.max_abs_diff:.3g} on example_input (a bug)")
    work.inference_report = report
    return work
