"""``tnconv.compress``: a smaller, faster model at a chosen budget, in one call.

The named choices come from the registries :data:`~.candidates.METHODS` (``method=``),
:data:`~.choose.ALLOCATIONS` (``allocate=``) and :data:`~.datafit.FITS` (``fit=``); an unknown
name is an error listing the valid ones. Timings are :mod:`.latency`'s, of the models' inference
forms (:func:`tnconv.for_inference`); ``latency=0.5`` searches the FLOPs budget whose model
runs at most that fraction of the dense model's latency (:func:`.latency.meet_latency`).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..cuts import parse_cut
from ..distillation import check_distillation
from ..model_layers import conv_layers, select_layers
from ..runtime import model_device, resolve_device
from .allocate import allocate_max_error
from .candidates import (
    METHODS,
    Geometry,
    LayerChoices,
    Option,
    dense_option,
    layer_families,
    swap_layer,
)
from .choose import ALLOCATIONS
from .datafit import FITS
from .latency import allocation_timer, check_latency, measure_latencies, meet_latency
from .summary import CompressReport, LayerResult

__all__ = ["compress", "FINETUNE_DEFAULTS"]

#: :func:`tnconv.fit` options of the fine-tuning (``finetune=`` overrides them): a small
#: learning rate, as the factored model starts close to a good one, and no augmentation (one
#: epoch is too short to gain from it). Measured on cnn4 / Fashion-MNIST at 25 % of the conv
#: parameters (benchmarks/bench_compress.py): 89.4 % after one epoch at fit's lr 0.1 with
#: augmentation, 92.0 % at lr 0.01 without (dense 92.6 %).
FINETUNE_DEFAULTS: dict[str, Any] = {"optimizer": "sgd", "lr": 0.01, "schedule": "cosine",
                                     "augment": False}


def _check_budget(params: Any, flops: Any, max_error: Any, target: float | None
                  ) -> tuple[str, float]:
    given = {k: v for k, v in (("params", params), ("flops", flops), ("max_error", max_error))
             if v is not None}
    if len(given) > 1:
        raise ValueError(f"give one budget, params=, flops= or max_error=; got {given}")
    if target is not None and given:
        raise ValueError(f"latency={target:g} is a budget of its own (the FLOPs fraction is "
                         f"searched to meet it): give it without params=, flops= or max_error=; "
                         f"got {given}")
    kind, value = next(iter(given.items())) if given else (
        ("params", 0.25) if target is None else ("flops", 1.0))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            0 < value <= 1 if kind != "max_error" else 0 <= value < 1):
        allowed = "in [0, 1)" if kind == "max_error" else "a fraction in (0, 1]"
        raise ValueError(f"{kind}={value!r} is not a valid budget; it must be {allowed}")
    return kind, float(value)


def _check_int(name: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {least}, got {type(value).__name__} "
                        f"{value!r}")
    if value < least:
        raise ValueError(f"{name} must be an int >= {least}, got {value}")
    return value


def _check_choices(method: str, allocate: str, cuts: Any, data: Any, kind: str
                   ) -> tuple[str, str]:
    """The canonical ``method`` and ``allocate`` names (registry errors list the valid ones)."""
    method, allocate = METHODS.resolve(method), ALLOCATIONS.resolve(allocate)
    if ALLOCATIONS[allocate].needs_data and data is None and kind != "max_error":
        free = [f"{n!r}" for n, a in ALLOCATIONS.items() if not a.needs_data]
        raise ValueError(f"allocate={allocate!r} needs data (held-out images to measure each "
                         "layer's accuracy drop): pass data=..., or choose allocate="
                         f"{', '.join(free[:-1])} or {free[-1]}, which need none")
    if cuts != "auto":
        for c in [cuts] if isinstance(cuts, str) else cuts:
            if not isinstance(c, str):
                raise TypeError("cuts must be 'auto', a cut string or a list of them, got "
                                f"{cuts!r}")
            parse_cut(c, ("out", "in", "kh", "kw"), max_groups=2, min_groups=2)
    return method, allocate


def _check_fit(fit: Any, allocate: str, kind: str) -> str:
    fit = FITS.resolve(fit)
    data_ok = ALLOCATIONS[allocate].needs_data and kind != "max_error"
    if FITS[fit].families is not None and not data_ok:
        raise ValueError(f"fit={fit!r} is chosen by allocate='sensitivity' with a params= or "
                         "flops= budget (it needs the measured drops); use fit='weights' "
                         f"with allocate={allocate!r}")
    if fit == "auto":  # the one choice that is not a fit of its own
        return "data" if data_ok else "weights"
    return fit


def _select(model: nn.Module, layers: Any) -> tuple[list[tuple[str, nn.Conv2d]], list[str]]:
    if not any(isinstance(m, nn.Conv2d) for _, m in conv_layers(model)):
        raise ValueError(f"the model ({type(model).__name__}) has no nn.Conv2d layer to compress")
    chosen = select_layers(model, None if layers == "*" else layers, types=(nn.Conv2d,))
    plain = [(n, m) for n, m in chosen
             if m.groups == 1 and type(m).forward is nn.Conv2d.forward]
    skipped = [n for n, m in chosen if (n, m) not in plain]
    return plain, skipped


def _input_size(data: Any, input_size: Any) -> tuple[int, ...] | None:
    if input_size is not None:
        size = tuple(int(d) for d in input_size)
        if len(size) != 3 or min(size) < 1:
            raise ValueError(f"input_size must be (C, H, W), got {input_size!r}")
        return size
    if data is None:
        return None
    from ..data import loaders

    for x, _ in loaders.batches(data, 2):
        return tuple(int(d) for d in x.shape[1:])
    return None


def _geometry(model: nn.Module, names: Sequence[str], input_size: tuple[int, ...] | None,
              device: torch.device) -> dict[str, Geometry]:
    if input_size is None:
        return {}
    found: dict[str, Geometry] = {}
    hooks = []
    for name in names:
        def hook(m: nn.Module, inp: Any, out: torch.Tensor, name: str = name) -> None:
            found[name] = Geometry(*inp[0].shape[2:], *out.shape[2:])
        hooks.append(model.get_submodule(name).register_forward_hook(hook))
    was = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_size, device=device))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return found


def _choices(chosen: Sequence[tuple[str, nn.Conv2d]], skipped: Sequence[tuple[str, nn.Module]],
             geom: dict[str, Geometry], method: str, cuts: Any, progress: bool,
             rank_multiple: int) -> list[LayerChoices]:
    out = []
    bar = tqdm(chosen, desc="compress: spectra", unit="layer", disable=not progress,
               dynamic_ncols=True)
    for name, conv in bar:
        bias = 0 if conv.bias is None else conv.bias.numel()
        shape = tuple(conv.weight.shape)
        out.append(LayerChoices(name, dense_option(shape, bias, geom.get(name)), layer_families(
            conv.weight.detach(), bias, geom.get(name), method=method, cuts=cuts,
            rank_multiple=rank_multiple)))
    for name, conv in skipped:
        bias = 0 if conv.bias is None else conv.bias.numel()
        out.append(LayerChoices(name, dense_option(tuple(conv.weight.shape), bias,
                                                   geom.get(name)), []))
    return out


def _least(layers: Sequence[LayerChoices], kind: str) -> tuple[float, float]:
    """The selected layers' dense cost and the cost of their cheapest options."""
    dense = sum(lc.dense.cost(kind) for lc in layers)
    return dense, sum(min(o.cost(kind) for o in lc.options(kind)) for lc in layers)


def _check_meetable(layers: Sequence[LayerChoices], kind: str, fraction: float) -> float:
    dense, least = _least(layers, kind)
    if fraction * dense < least:
        raise ValueError(f"{kind}={fraction:g} cannot be met: the smallest factorization (the "
                         f"smallest ranks allowed everywhere) keeps {least / dense:.4f} of the "
                         f"selected layers' {kind}; ask for at least that, or select fewer "
                         "layers")
    return fraction * dense


def _replace(small: nn.Module, layers: Sequence[LayerChoices], options: Sequence[Option],
             drops: Sequence[float | None] | None, progress: bool
             ) -> tuple[nn.Module, list[LayerResult]]:
    """``small`` with every layer's option in place (a new module when ``small`` is the one
    conv), and the report's rows."""
    results = []
    bar = tqdm(list(zip(layers, options, strict=True)), desc="compress: factoring",
               unit="layer", disable=not progress, dynamic_ncols=True)
    for k, (lc, opt) in enumerate(bar):
        small, conv, new = swap_layer(small, lc.name, opt)
        after = sum(p.numel() for p in new.parameters())
        results.append(LayerResult(
            lc.name, opt.method, opt.cut, tuple(opt.ranks), lc.dense.params, after,
            lc.dense.flops, opt.flops, 0.0 if new is conv else _kernel_error(conv, new),
            None if drops is None or drops[k] is None else float(drops[k]), opt.fit,
            opt.error if opt.fit == "data" else None))
    return small, results


@torch.no_grad()
def _kernel_error(conv: nn.Conv2d, layer: nn.Module) -> float:
    """Relative Frobenius error of ``layer``'s kernel against ``conv``'s."""
    w = conv.weight.detach().to(torch.float64)
    norm = float(torch.linalg.vector_norm(w))
    diff = float(torch.linalg.vector_norm(layer.kernel().detach().to(torch.float64) - w))
    return diff / norm if norm > 0 else diff


def _allocate(model: nn.Module, data: Any, layers: list[LayerChoices], kind: str, value: float,
              allocate: str, *, fit: str, cache: bool, device: torch.device, progress: bool,
              size: tuple[int, ...] | None, batch: int
              ) -> tuple[list[Option], Any, dict[str, Any]]:
    """The options, per-layer predicted drops (or None) and extra report fields."""
    if kind == "max_error":
        return allocate_max_error(layers, value, "params"), None, {}
    return ALLOCATIONS[allocate].run(
        layers, _check_meetable(layers, kind, value), kind, model=model, data=data,
        device=device, cache=cache, progress=progress, fit=fit,
        time_all=allocation_timer(model, layers, size, device, batch=batch))


def _finish(report: CompressReport, model: nn.Module, small: nn.Module, data: Any,
            train_data: Any, epochs: int, finetune: dict[str, Any] | None, latency: bool,
            device: torch.device, progress: bool) -> None:
    """Accuracies, fine-tuning and (``latency``, unless a latency budget measured them) the
    inference forms' latencies."""
    from ..train import evaluate, fit

    if data is not None:
        report.accuracy_dense = evaluate(model, data, device=device)["accuracy"]
        report.accuracy_compressed = evaluate(small, data, device=device)["accuracy"]
    if epochs > 0:
        source = train_data
        if source is None:
            if data is None:
                raise ValueError("epochs > 0 needs train_data= (or data=) to fine-tune on")
            source = data
            report.notes.append("fine-tuned on data (no train_data given): the fine-tuned "
                                "accuracy on the same data is optimistic")
            warnings.warn("compress: fine-tuning on data, as train_data is None", stacklevel=3)
        options = {**FINETUNE_DEFAULTS, **(finetune or {})}
        if ("distill" in options or "temperature" in options) and "teacher" not in options:
            options["teacher"] = model  # distillation from the dense model
        fit(small, source, epochs=epochs, device=device, progress=progress, **options)
        if data is not None:
            report.accuracy_finetuned = evaluate(small, data, device=device)["accuracy"]
    if latency and report.input_size is not None and report.latency_budget is None:
        report.latency_dense_s, report.latency_compressed_s = measure_latencies(
            [model, small], report.input_size, batch=report.latency_batch, device=device)


def _meet(make: Any, model: nn.Module, target: float, layers: Sequence[LayerChoices],
          size: tuple[int, ...], batch: int, device: torch.device
          ) -> tuple[nn.Module, CompressReport]:
    """The model of the largest FLOPs fraction whose inference form meets ``target``."""
    dense, least = _least(layers, "flops")
    lowest = min(1.0, least / dense * (1 + 1e-9)) if dense else 1.0
    (small, report), kept, trials = meet_latency(
        lambda f: make("flops", f), model, target, lowest, input_size=size, batch=batch,
        device=device)
    report.latency_budget = target
    report.latency_dense_s, report.latency_compressed_s = kept.dense_s, kept.compressed_s
    report.latency_search = [t.to_dict() for t in trials]
    report.notes.append(f"latency={target:g}: kept flops={kept.fraction:.4g}, the largest FLOPs "
                        f"fraction of the {len(trials)} tried whose inference form ran within "
                        f"the target ({kept.ratio:.3f} of dense, batch {batch})")
    return small, report


def compress(
    model: nn.Module,
    data: Any = None,
    *,
    params: float | None = None,
    flops: float | None = None,
    max_error: float | None = None,
    method: str = "auto",
    allocate: str = "sensitivity",
    cuts: str | Sequence[str] = "auto",
    layers: Any = "*",
    finetune: dict[str, Any] | None = None,
    epochs: int = 0,
    train_data: Any = None,
    input_size: Sequence[int] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    cache: bool = True,
    latency: bool | float = True,
    fit: str = "auto",
    rank_multiple: int = 1,
    batch_size: int = 256,
) -> tuple[nn.Module, CompressReport]:
    """A smaller, faster copy of ``model`` with factored convolutions, at a chosen budget.

    Parameters
    ----------
    model
        A trained model; never modified (a deep copy is compressed).
    data
        Held-out ``(images, labels)`` in any form of :mod:`tnconv.data.loaders`: needed by
        ``allocate="sensitivity"``; the accuracy before and after is measured on it.
    params, flops, max_error
        The budget, at most one (default ``params=0.25``; none with a ``latency`` budget).
        ``params`` / ``flops``: a fraction in (0, 1] of the selected layers' parameters
        (weights and biases) / multiply-adds at ``input_size``; the result is at most the
        budget and as close to it as the discrete ranks allow. ``max_error``: each layer's
        cheapest option whose relative Frobenius kernel error is at most this (``allocate``
        is then unused).
    method
        ``"svd"`` (a two-site cut at rank ``r``, an :class:`MPSConv2d` of two sites),
        ``"tucker"`` (Tucker-2), ``"mps"`` (the chain ``out|kh|kw|in``), ``"cp"`` (ALS: slow)
        or ``"auto"`` (per layer the best of svd, tucker and mps). A ``1 x 1`` convolution
        only gets the cut ``out|in``. Errors: svd exact (Eckart-Young), tucker exact HOSVD,
        mps the TT-SVD bound, cp the ALS fit.
    allocate
        How the budget is shared by the layers: ``"uniform"`` (the same kept fraction in each
        layer, within each layer's best family), ``"energy"`` (one threshold on the
        discarded energy, no data), ``"vbmf"`` (EVBMF ranks, Kim et al. 2016, all scaled by one
        common factor found by bisection so that the budget is met) or ``"sensitivity"``
        (:mod:`tnconv.compression.choose`): each layer's accuracy drop measured on ``data``
        at a few options of its best families (one layer changed at a time, cached); the
        multiple-choice knapsack on those drops and variants of it (a FLOPs penalty, the
        separable cuts only), plus the uniform, energy and vbmf allocations, each evaluated
        on ``data`` and timed; the fastest within 0.2 points of the most accurate (and never
        below uniform, energy or vbmf on ``data``) is kept.
    cuts
        svd cuts: ``"auto"`` (per layer the cheap cut with the best error per parameter:
        ``out|in,kh,kw``, ``out,kh,kw|in``, ``out,kh|in,kw``, ``out,kw|in,kh``), a cut string
        or a list of them.
    layers
        Which ``nn.Conv2d`` layers: ``"*"`` (all), patterns or a predicate
        (:func:`tnconv.model_layers.select_layers`). Grouped convolutions stay dense.
    finetune, epochs, train_data
        ``epochs > 0`` fine-tunes the factored model with :func:`tnconv.fit` on
        ``train_data``, or on ``data`` when it is None (with a warning); ``finetune``
        overrides :data:`FINETUNE_DEFAULTS` (SGD, lr 0.01, cosine, no augmentation: the
        training defaults' lr 0.1 one-cycle undoes much of what the factors keep).
        ``finetune={"distill": 1.0, "temperature": 4}`` distils from the dense ``model``
        (:mod:`tnconv.distillation`: its logits on the same batches, eval mode, no_grad);
        ``finetune`` with ``epochs=0`` is an error (it would be ignored).
    input_size
        ``(C, H, W)`` for FLOPs and timings; default from ``data``'s first batch. Required by
        ``flops=``.
    device
        Where to compute and evaluate; default the model's device.
    progress, cache
        tqdm bars; cache the sensitivity sweep under ``runtime.cache_dir("compress")``.
    latency
        ``True`` (default) / ``False``: time the dense and the compressed model, or not.
        What is timed is each one's inference form (:func:`tnconv.for_inference`: plain
        convolutions on the measured-faster path, batch norm folded), the median of 5
        interleaved passes of a batch of ``batch_size`` at ``input_size``: the report's
        ``latency_dense_s`` / ``latency_compressed_s``. A float in (0, 1) is a *latency
        budget* instead of ``params`` / ``flops``: the model's inference form runs in at most
        this fraction of the dense inference form's time, measured at ``batch_size`` on
        ``device`` (needs ``input_size`` or ``data``). The FLOPs fraction is searched
        (:func:`tnconv.compression.latency.meet_latency`: bisection, each candidate
        allocated as ``flops=`` would be and timed interleaved with the dense form); the
        largest fraction measured within the budget is kept, its measured ratio recorded
        (``latency_ratio``, ``latency_search``). ``True`` is checked before numbers, so
        ``latency=1`` is refused rather than read as ``True``.
    fit
        ``"weights"``: factors approximate each kernel. ``"data"``: ``allocate="sensitivity"``
        may also use, per layer, the cut ``out|in,kh,kw`` fitted to the layer's outputs on
        ``data`` (:mod:`tnconv.compression.datafit`; the measured drops decide). ``"auto"``
        (default): ``"data"`` for ``allocate="sensitivity"`` with a params or FLOPs budget,
        ``"weights"`` otherwise.
    rank_multiple
        Every rank (svd rank, Tucker ranks, MPS bonds, CP rank) a multiple of this (an int
        >= 1; 8 suits tensor cores and SIMD widths), never above the layer's full rank: a
        leg whose full rank is not a multiple may also keep that full rank (a dimension of
        the kernel, as an MPS bond capped by its leg). The option grids are restricted to
        these ranks before the allocation, so the budget holds as it does at 1.
    batch_size
        The batch of the latency measurements (the report's, the sensitivity candidates',
        the latency budget's).

    Returns
    -------
    (nn.Module, CompressReport)
        The compressed model (``tnconv.densify`` turns it back into plain convolutions) and
        what was chosen and measured.

    Examples
    --------
    >>> import torch, tnconv
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(),
    ...                           torch.nn.Conv2d(16, 32, 3))
    >>> small, report = compress(net, params=0.5, allocate="energy", progress=False)
    >>> report.params_fraction <= 0.5, type(small[2]).__name__ in ("MPSConv2d", "TuckerConv2d")
    (True, True)

    Raises
    ------
    TypeError
        ``model`` is not a module; ``latency``, ``rank_multiple`` or ``batch_size`` of the
        wrong type.
    ValueError
        A bad budget or choice, a budget that cannot be met, or a ``latency`` budget that no
        model tried met (the message gives the fastest ratio reached).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    target = check_latency(latency)
    kind, value = _check_budget(params, flops, max_error, target)
    method, allocate = _check_choices(method, allocate, cuts, data, kind)
    fit = _check_fit(fit, allocate, kind)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    if finetune is not None and epochs == 0:
        raise ValueError("finetune= was given with epochs=0, so it would be ignored: pass "
                         "epochs >= 1 to fine-tune, or leave finetune out")
    if finetune is not None and ("distill" in finetune or "temperature" in finetune):
        check_distillation(finetune.get("distill"), finetune.get("temperature"))
    rank_multiple = _check_int("rank_multiple", rank_multiple, 1)
    batch_size = _check_int("batch_size", batch_size, 1)
    dev = model_device(model) if device is None else resolve_device(device)
    chosen, skipped = _select(model, layers)
    size = _input_size(data, input_size)
    if kind == "flops" and size is None:
        raise ValueError(("flops=" if target is None else f"latency={target:g}") + " needs "
                         "input_size=(C, H, W) or data to infer it from")
    base = copy.deepcopy(model).to(dev)
    geom = _geometry(base, [n for n, _ in chosen] + skipped, size, dev)
    rest = [(n, base.get_submodule(n)) for n in skipped]
    layers_ = _choices([(n, base.get_submodule(n)) for n, _ in chosen], rest, geom, method,
                       cuts, progress, rank_multiple)

    def make(at_kind: str, at: float) -> tuple[nn.Module, CompressReport]:
        options, drops, extra = _allocate(model, data, layers_, at_kind, at, allocate, fit=fit,
                                          cache=cache, device=dev, progress=progress,
                                          size=size, batch=batch_size)
        report = CompressReport(budget_kind=at_kind, budget=at, method=method,
                                allocate=allocate, fit=fit, input_size=size,
                                skipped=list(skipped), latency_batch=batch_size,
                                rank_multiple=rank_multiple, **extra)
        fresh = base if target is None else copy.deepcopy(base)  # one model, or one per try
        small, report.layers = _replace(fresh, layers_, options, drops, progress)
        return small, report

    if target is None:
        small, report = make(kind, value)
    else:
        small, report = _meet(make, model, target, layers_, size, batch_size, dev)
    _finish(report, model, small, data, train_data, epochs, finetune, latency is not False,
            dev, progress)
    return small.eval() if not model.training else small, report
