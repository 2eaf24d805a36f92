"""Deployed latency of compressed models against dense: torch eager, torch.compile, ONNX Runtime.

CPU (the default; issue 23, "Benchmarks"): cnn4 and resnet20 trained on Fashion-MNIST
(``tnconv.train_or_load``: the cached checkpoint, else trained now, about 3 and 6 minutes on 2
idle cores), 2 threads (``torch.set_num_threads(2)``, ONNX Runtime ``intra_op_num_threads=2``),
batch 1 and 64 of 1 x 32 x 32 (tnconv pads Fashion-MNIST's 28 x 28). Per model: dense, and
``tnconv.compress(model, sens, params=p, allocate="sensitivity", latency=False)`` at p = 0.5,
0.25 and 0.1 of the conv parameters (``sens``: the 1000 test images of ``_common.SPLIT``).
Accuracy is *not* this benchmark's subject (``bench_compress.py`` measures it); the compressed
models are cached under ``~/.cache/tnconv/bench_deploy`` (keyed by the checkpoint, budget and
allocation).

Every model runs in these forms and runtimes (the table's columns):

* ``eval``: the model as it is, in eval mode, torch eager: plain dense eval, and the
  compressed model's *training form* (its factored layers, batch norm not folded);
* ``eager``: the inference form, ``tnconv.for_inference(model, x)`` at that batch size
  (batch norm folded; each factored layer on its measured-faster path), torch eager;
* ``compile``: ``torch.compile`` of the inference form (inductor, default mode on CPU);
* ``onnx``: ONNX Runtime (CPU provider, all graph optimisations, intra-op spinning off so that
  idle ORT threads do not take the cores from the calls timed after them) on the inference
  form written by ``tnconv.export_onnx`` (dynamic batch dimension); its output is checked
  against the inference form's (``checks`` in the JSON).

All variants of one model and batch are timed interleaved (``_common.interleaved``: one call
of each, round after round, after warm-up rounds, so that load drift hits them alike). Each
row gives the median, its ratio to dense *in the same runtime* (compressed ``onnx`` / dense
``onnx``; compressed ``eager`` / dense ``eager``, the dense inference form with batch norm
folded; ``eval``: training form / dense eval) and its ratio to plain dense eval; the
parameters and conv FLOPs fractions of the compressed model (from its report) and the conv
multiply-adds its inference form executes. The issue's goals (params 0.25, batch 64, both
models: ``onnx`` <= 0.5x dense, ``eager`` <= 0.6x dense inference form) are evaluated from the
rows, pass or fail; batch 1 is reported alongside.

``--device cuda`` (issue 23, "GPU"; ``gpu_checks.sh`` steps ``deploy``, ``deploy-autotune``):
``tnconv.resnet50(1000, 3, cifar_stem=False)`` at a fixed random init (timing only), 224 x 224,
batch 64, bf16, channels-last, dense against ``compress(..., flops=0.25, allocate="uniform",
input_size=(3, 224, 224))``, both inference forms ``for_inference(..., device="cuda",
dtype=torch.bfloat16)``, eager and ``torch.compile(mode="max-autotune")`` (``--compile-modes``:
``reduce-overhead`` for CUDA graphs), and ONNX Runtime's CUDA provider (float16, I/O bound on
the GPU) where the installed onnxruntime has it (else the row says why not). Goal: compressed
<= 0.6x dense.

Run::

    python benchmarks/bench_deploy.py           # results/bench_deploy_cpu.json, ~15 min idle
    python benchmarks/bench_deploy.py --quick   # smoke run: init weights, params 0.25, few rounds
    python benchmarks/bench_deploy.py --device cuda --out /tmp/gpu/bench_deploy_cuda.json
    python benchmarks/bench_deploy.py --from-json benchmarks/results/bench_deploy_cpu.json \\
        --readme                                 # the README table of a finished run
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from _common import (
    RESULTS,
    SPLIT,
    Timing,
    checkpoint_or_init,
    command_line,
    conv_params,
    environment,
    interleaved,
    split_data,
    wall_clock,
    write_result,
)

# ---------------------------------------------------------------------- config
CONFIG: dict[str, Any] = {
    "dataset": "fashion-mnist",       # of the checkpoints (and of the sensitivity data)
    "models": ["cnn4", "resnet20"],   # "resnet50": ImageNet-shaped, random init (see --device)
    "trained": True,                  # train_or_load; False: cached checkpoint, else random init
    "budget_kind": "params",          # compress(params=...) or compress(flops=...)
    "budgets": [0.5, 0.25, 0.1],      # fractions of the conv layers' parameters (or FLOPs)
    "allocate": "sensitivity",        # compress(allocate=...); "sensitivity" uses SPLIT's data
    "batches": [1, 64],
    "threads": 2,                     # torch intra-op and ORT intra-op threads (CPU)
    "dtype": "float32",               # of the torch forms
    "image_size": 224,                # resnet50 only: H = W in pixels (the others: 32)
    "runtimes": ["eval", "eager", "compile", "onnx"],
    "path": "measured",               # for_inference(path=...): "flops" is reproducible
    "compile_modes": ["default"],     # torch.compile(mode=...); "default": no mode given
    "onnx_dtype": "float32",          # of the ONNX export (ORT's CUDA convs have no bf16)
    "ort_spinning": False,            # ORT intra-op spinning (off: fair to interleaved calls)
    "channels_last": False,           # the eval form (and the input) in channels-last memory
                                      # format; the inference form's is for_inference's "auto"
    "cudnn_benchmark": False,
    "rounds": 30,                     # timed rounds at least (one call of every variant each)
    "warmup": 3,                      # untimed rounds first
    "min_total_s": 1.0,               # more rounds while some variant has run less (seconds)
    "max_rounds": 1000,               # ... but at most this many rounds
    "cache": True,                    # keep compressed models under cache_dir("bench_deploy")
    "seed": 0,                        # of the inputs and of a random init
    "goal_budget": 0.25, "goal_batch": 64,
    "goals": {"onnx": 0.5, "eager": 0.6},  # runtime -> compressed / dense at most
}
#: ``--device cuda``: issue 23's GPU figures (ResNet-50, 224 x 224, batch 64, bf16).
CUDA: dict[str, Any] = {
    "models": ["resnet50"], "trained": False, "budget_kind": "flops", "budgets": [0.25],
    "allocate": "uniform", "batches": [64], "threads": None, "dtype": "bfloat16",
    "compile_modes": ["max-autotune"], "onnx_dtype": "float16", "channels_last": True,
    "cudnn_benchmark": True, "rounds": 30, "warmup": 5, "min_total_s": 0.0,
    "goals": {"eager": 0.6, "compile": 0.6, "onnx": 0.6},
}
#: ``--quick``: a smoke run (random init or a cached checkpoint, one budget, few rounds).
QUICK: dict[str, Any] = {
    "trained": False, "budgets": [0.25], "allocate": "energy", "rounds": 5, "warmup": 1,
    "min_total_s": 0.05, "max_rounds": 50, "cache": False,
}
# -------------------------------------------------------------------------------------------

RUNTIME_TITLES = {"eval": "eval (as trained)", "eager": "eager (inference form)",
                  "compile": "torch.compile", "onnx": "ONNX Runtime"}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _runtime_keys(cfg: Mapping[str, Any]) -> list[str]:
    """The timed columns: ``eval``, ``eager``, ``compile`` (one per mode:
    ``compile:MODE`` for a mode other than the default) and ``onnx``, as asked for."""
    out = []
    for r in cfg["runtimes"]:
        if r == "compile":
            out += ["compile" if m == "default" else f"compile:{m}" for m in cfg["compile_modes"]]
        else:
            out.append(r)
    return out


def _label(kind: str, budget: float | None) -> str:
    return "dense" if budget is None else f"{kind} {budget:g}"


# ------------------------------------------------------------------ models


def _source_key(name: str, cfg: Mapping[str, Any]) -> str:
    """What the dense weights are: the checkpoint file (path, size, mtime) or the init."""
    from tnconv.checkpoints import default_checkpoint_path

    if name == "resnet50":
        return f"resnet50 ImageNet stem, 1000 classes, init seed {cfg['seed']}"
    path = default_checkpoint_path(name, cfg["dataset"])
    if path.is_file():
        st = path.stat()
        return f"{path}:{st.st_size}:{st.st_mtime_ns}"
    return f"{name} init seed {cfg['seed']}"


def dense_model(name: str, cfg: Mapping[str, Any], device: Any) -> tuple[Any, tuple[int, ...],
                                                                          str, dict[str, Any]]:
    """``(model in eval mode, input size (C, H, W), where it came from, checkpoint meta)``."""
    import torch

    import tnconv

    if name == "resnet50":
        torch.manual_seed(cfg["seed"])
        size = int(cfg["image_size"])
        model = tnconv.resnet50(1000, 3, cifar_stem=False).to(device).eval()
        return (model, (3, size, size), f"random init (seed {cfg['seed']}), ImageNet stem",
                {"model": "resnet50", "model_kwargs": {"cifar_stem": False}})
    from tnconv.data import load_dataset

    info = load_dataset(cfg["dataset"], "test")
    size = tuple(int(d) for d in info.images.shape[1:])
    classes = int(info.labels.max()) + 1
    if cfg["trained"]:
        model, meta = tnconv.train_or_load(name, cfg["dataset"], device=device, progress=False)
        acc = meta.get("accuracy")
        where = "trained (train_or_load" + ("" if acc is None else f", test accuracy {acc:.4f}")
        return model.eval(), size, where + ")", {"model": name, **{
            k: meta[k] for k in ("model_kwargs",) if k in meta}}
    model, where = checkpoint_or_init(
        name, cfg["dataset"], lambda: tnconv.get_model(name, classes, size[0]), device)
    return model, size, where, {"model": name}


def _sensitivity_data(cfg: Mapping[str, Any]) -> Any:
    from tnconv.data import load_dataset

    sens, _, _ = split_data(load_dataset(cfg["dataset"], "test"),
                            load_dataset(cfg["dataset"], "train"))
    return sens


def compressed_model(dense: Any, name: str, budget: float, size: tuple[int, ...],
                     cfg: Mapping[str, Any], device: Any, meta: Mapping[str, Any],
                     data: Callable[[], Any]) -> tuple[Any, Any, float, bool]:
    """``(compressed model, its CompressReport, seconds, from the cache)``."""
    import tnconv
    from tnconv.compression import ALLOCATIONS, load_compressed, save_compressed
    from tnconv.runtime import cache_dir

    key = json.dumps({"source": _source_key(name, cfg), "kind": cfg["budget_kind"],
                      "budget": budget, "allocate": cfg["allocate"], "size": size,
                      "split": SPLIT, "tnconv": tnconv.__version__}, sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    path = cache_dir("bench_deploy") / f"{name}-{cfg['budget_kind']}{budget:g}-{digest}.pt"
    t0 = time.perf_counter()
    if cfg["cache"] and path.is_file():
        try:
            small, saved, report = load_compressed(path, map_location=device)
            if saved.get("bench_deploy_key") == key and report is not None:
                return small.eval(), report, time.perf_counter() - t0, True
        except Exception as exc:  # noqa: BLE001 - a stale or broken cache entry: compress anew
            print(f"  cache {path.name} unusable ({_first_line(exc)}); compressing", flush=True)
    needs = ALLOCATIONS[ALLOCATIONS.resolve(cfg["allocate"])].needs_data
    small, report = tnconv.compress(
        dense, data() if needs else None, **{cfg["budget_kind"]: budget},
        allocate=cfg["allocate"], input_size=size, device=device, progress=False,
        latency=False)
    seconds = time.perf_counter() - t0
    if cfg["cache"]:
        try:
            save_compressed(small, path, meta={**meta, "bench_deploy_key": key}, report=report)
        except Exception as exc:  # noqa: BLE001 - the cache is an optimisation only
            print(f"  not cached ({_first_line(exc)})", flush=True)
    return small.eval(), report, seconds, False


def conv_macs(model: Any, x: Any) -> int:
    """Multiply-adds of every ``nn.Conv2d`` of ``model`` on ``x`` (forward hooks)."""
    import torch
    from torch import nn

    total = 0

    def hook(m: nn.Conv2d, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return total


# ------------------------------------------------------------------ runtimes


def export_onnx_file(model: Any, path: Path, example: Any) -> dict[str, Any]:
    """Write ``model`` (an inference form, on the device of ``example``) to ``path`` with
    ``tnconv.export_onnx`` (dynamic batch dimension; its own ONNX Runtime check left to
    :func:`ort_runner`'s session, on the provider that is timed); returns what it reports."""
    from tnconv import export_onnx

    rep = export_onnx(model, path, example, dynamic_batch=True, check=False,
                      device=example.device)
    return {"how": "tnconv.export_onnx(dynamic_batch=True)", "opset": rep.opset,
            "mb": round(rep.size_bytes / 2**20, 3)}


def ort_runner(path: Path, x: Any, cfg: Mapping[str, Any], cuda: bool
               ) -> tuple[Callable[[], Any], Callable[[], Any], dict[str, Any]]:
    """``(timed call, call returning the output as a torch tensor, session info)``: an ONNX
    Runtime session of ``path`` on the CPU provider (``cfg["threads"]`` intra-op threads), or
    on the CUDA provider with the input and output bound on the GPU (raises where that provider
    is missing or does not load)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    if cuda and hasattr(ort, "preload_dlls"):
        try:  # the CUDA / cuDNN libraries of torch's wheels (same CUDA major only)
            ort.preload_dlls()
        except Exception:  # noqa: BLE001 - the provider check below says what is missing
            pass
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    if cfg["threads"]:
        so.intra_op_num_threads = int(cfg["threads"])
    if not cfg["ort_spinning"]:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    info: dict[str, Any] = {"onnxruntime": ort.__version__,
                            "available_providers": ort.get_available_providers()}
    if cuda and "CUDAExecutionProvider" not in info["available_providers"]:
        raise RuntimeError(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider "
                           f"(providers: {', '.join(info['available_providers'])}); "
                           "onnxruntime-gpu is not installed")
    providers = ["CUDAExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    sess = ort.InferenceSession(str(path), so, providers=providers)
    info["providers"] = sess.get_providers()
    if sess.get_providers()[0] != providers[0]:
        raise RuntimeError(f"ONNX Runtime fell back to {sess.get_providers()} (the "
                           f"{providers[0]} did not load)")
    name, out_name = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    feed = x.detach().cpu().numpy()
    if not cuda:
        return (lambda: sess.run(None, {name: feed}),
                lambda: torch.from_numpy(np.asarray(sess.run(None, {name: feed})[0])), info)
    binding = sess.io_binding()
    binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(feed, "cuda", 0))
    binding.bind_output(out_name, "cuda")

    def call() -> None:
        sess.run_with_iobinding(binding)

    def output() -> Any:
        call()
        return torch.from_numpy(np.asarray(binding.copy_outputs_to_cpu()[0]))

    return call, output, info


def _compiled(model: Any, x: Any, mode: str) -> Callable[[], Any]:
    """``torch.compile(model, mode=mode)`` compiled and warmed up on ``x``: a call of no
    argument. On CUDA every call first marks a new step for CUDA graphs (``reduce-overhead``,
    ``max-autotune``), as the outputs of the last call are never used again."""
    import torch

    compiled = torch.compile(model, **({} if mode == "default" else {"mode": mode}))
    if x.device.type == "cuda":
        def call() -> Any:
            torch.compiler.cudagraph_mark_step_begin()
            return compiled(x)
    else:
        def call() -> Any:
            return compiled(x)
    with torch.inference_mode():
        for _ in range(3):  # compile, then the first runs (CUDA graphs record on the second)
            call()
    return call


def _rel_err(a: Any, b: Any) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _device_wall_clock(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``(fn(), seconds)`` by the wall clock between two device-wide CUDA synchronisations:
    ONNX Runtime works on its own stream, which events on torch's stream would not see."""
    import torch

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def build_variant(model: Any, label: str, x: Any, cfg: Mapping[str, Any], device: Any,
                  workdir: Path) -> tuple[dict[str, Callable[[], Any]], dict[str, Any]]:
    """Every runtime of one model (dense or compressed) at one batch: ``(calls by runtime,
    info)``; a runtime that fails is left out of the calls, its error in ``info["errors"]``."""
    import torch

    import tnconv

    dtype = getattr(torch, cfg["dtype"])
    cuda = torch.device(device).type == "cuda"
    fmt = torch.channels_last if cfg["channels_last"] else torch.contiguous_format
    calls: dict[str, Callable[[], Any]] = {}
    info: dict[str, Any] = {"errors": {}, "seconds": {}, "checks": {}}
    want = _runtime_keys(cfg)
    xin = x.to(dtype).contiguous(memory_format=fmt)
    if "eval" in want:
        plain = copy.deepcopy(model).to(device=device, dtype=dtype, memory_format=fmt).eval()
        calls["eval"] = lambda: plain(xin)
    t0 = time.perf_counter()
    try:
        inf = tnconv.for_inference(model, x.to(dtype), device=device, dtype=dtype,
                                   path=cfg["path"], memory_format=(
                                       "channels_last" if cfg["channels_last"] else "auto"))
    except Exception as exc:  # noqa: BLE001 - every inference-form runtime fails with it
        why = f"for_inference: {_first_line(exc)}"
        info["errors"] = {rt: why for rt in want if rt != "eval"}
        print(f"  {label}: {why}", flush=True)
        return calls, info
    info["seconds"]["for_inference"] = time.perf_counter() - t0
    rep = inf.inference_report
    info["paths"] = {p: sum(v == p for v in rep.paths.values()) for p in ("dense", "factored")}
    info["folded"] = len(rep.folded)
    info["memory_format"] = rep.memory_format
    info["inference_conv_params"] = conv_params(inf)
    info["inference_conv_macs"] = conv_macs(inf, xin[:1])
    with torch.inference_mode():
        reference = inf(xin)
    if "eager" in want:
        calls["eager"] = lambda: inf(xin)
    for key in [k for k in want if k.startswith("compile")]:
        mode = key.partition(":")[2] or "default"
        t0 = time.perf_counter()
        try:
            compiled = _compiled(inf, xin, mode)
            with torch.inference_mode():
                info["checks"][f"{key}_rel_err"] = _rel_err(compiled(), reference)
            calls[key] = compiled
        except Exception as exc:  # noqa: BLE001 - recorded in the row, the run goes on
            info["errors"][key] = _first_line(exc)
            print(f"  {label} {key}: failed: {info['errors'][key]}", flush=True)
        info["seconds"][key] = time.perf_counter() - t0
    if "onnx" in want:
        t0 = time.perf_counter()
        try:
            odtype = getattr(torch, cfg["onnx_dtype"])
            form = inf if odtype == dtype else tnconv.for_inference(
                model, x.to(odtype), device=device, dtype=odtype, path=cfg["path"])
            xo = x.to(odtype)
            path = workdir / f"{label.replace(' ', '_')}-b{x.shape[0]}.onnx"
            info["onnx_export"] = export_onnx_file(form, path, xo)
            call, output, info["ort"] = ort_runner(path, xo, cfg, cuda)
            with torch.inference_mode():
                info["checks"]["onnx_rel_err"] = _rel_err(output(), form(xo))
            calls["onnx"] = call
        except Exception as exc:  # noqa: BLE001 - recorded in the row, the run goes on
            info["errors"]["onnx"] = _first_line(exc)
            print(f"  {label} onnx: failed: {info['errors']['onnx']}", flush=True)
        info["seconds"]["onnx"] = time.perf_counter() - t0
    return calls, info


# ------------------------------------------------------------------ one model


def run_model(name: str, cfg: Mapping[str, Any], device: Any, workdir: Path
              ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every (batch, variant, runtime) row of one model, and its notes."""
    import torch

    dense, size, where, meta = dense_model(name, cfg, device)
    print(f"{name}: {where}; input {size}", flush=True)
    data_cache: list[Any] = []

    def data() -> Any:
        if not data_cache:
            data_cache.append(_sensitivity_data(cfg))
        return data_cache[0]

    models: dict[str, tuple[Any, dict[str, Any]]] = {
        "dense": (dense, {"budget": None, "params_fraction": 1.0, "conv_flops_fraction": 1.0})}
    for budget in cfg["budgets"]:
        small, report, seconds, cached = compressed_model(dense, name, budget, size, cfg,
                                                          device, meta, data)
        label = _label(cfg["budget_kind"], budget)
        models[label] = (small, {
            "budget": budget, "params_fraction": report.params_fraction,
            "conv_flops_fraction": report.flops_fraction, "compress_s": round(seconds, 2),
            "compress_cached": cached, "allocate": report.allocate,
            "methods": sorted({r.method for r in report.layers})})
        print(f"  {label}: params {report.params_fraction:.3f}, conv FLOPs "
              f"{report.flops_fraction:.3f} ({'cache' if cached else f'{seconds:.1f} s'})",
              flush=True)
    dense_params = conv_params(dense)
    rows: list[dict[str, Any]] = []
    notes: dict[str, Any] = {"source": where, "input_size": list(size), "models": {}}
    cuda = torch.device(device).type == "cuda"
    gen = torch.Generator().manual_seed(cfg["seed"])
    for batch in cfg["batches"]:
        torch._dynamo.reset()
        x = torch.randn(batch, *size, generator=gen).to(device)
        calls: dict[str, Callable[[], Any]] = {}
        infos: dict[str, dict[str, Any]] = {}
        for label, (model, _) in models.items():
            t0 = time.perf_counter()
            mine, infos[label] = build_variant(model, label, x, cfg, device, workdir)
            calls.update({f"{label}|{rt}": fn for rt, fn in mine.items()})
            print(f"  batch {batch}, {label}: built {', '.join(mine)} in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        with torch.inference_mode():
            timed = interleaved(calls, cfg["rounds"], warmup=cfg["warmup"],
                                min_total_s=cfg["min_total_s"], max_rounds=cfg["max_rounds"],
                                clock=_device_wall_clock if cuda else wall_clock)
        rounds = max((len(t.times) for t in timed.values()), default=0)
        print(f"  batch {batch}: timed {len(calls)} calls x {rounds} rounds in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        rows += _rows(name, batch, models, infos, timed, dense_params, cfg)
        for label, info in infos.items():
            notes["models"].setdefault(label, {})[f"batch {batch}"] = info
        del calls, timed, infos
    for label, (_, extra) in models.items():
        notes["models"].setdefault(label, {}).update(extra)
    return rows, notes


def _rows(name: str, batch: int, models: Mapping[str, tuple[Any, dict[str, Any]]],
          infos: Mapping[str, dict[str, Any]], timed: Mapping[str, Timing], dense_params: int,
          cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    dense_macs = infos["dense"].get("inference_conv_macs")
    out = []
    for label, (model, extra) in models.items():
        info = infos[label]
        for rt in _runtime_keys(cfg):
            t = timed.get(f"{label}|{rt}")
            row: dict[str, Any] = {
                "model": name, "batch": batch, "variant": label, "budget": extra["budget"],
                "runtime": rt, "params_fraction": extra["params_fraction"],
                "conv_flops_fraction": extra["conv_flops_fraction"],
                "conv_params": conv_params(model), "dense_conv_params": dense_params,
                "params": sum(p.numel() for p in model.parameters()),
                "inference_conv_params": info.get("inference_conv_params"),
                "inference_macs_fraction": (info["inference_conv_macs"] / dense_macs
                                            if dense_macs else None),
                "error": info["errors"].get(rt)}
            if t is not None:  # median_ms, best_ms, mean_ms, std_ms, p10_ms, p90_ms
                row.update({f"{k[:-2]}_ms": 1e3 * v for k, v in t.summary().items()
                            if k.endswith("_s")})
                row["rounds"] = len(t.times)
                base = timed.get(f"dense|{rt}")
                if base is not None and label != "dense":  # round by round, same runtime
                    row["ratio_paired"] = statistics.median(
                        c / d for c, d in zip(t.times, base.times, strict=True))
            out.append(row)
    _add_ratios(out)
    return out


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    """``ratio`` (to dense in the same runtime) and ``ratio_vs_dense_eval`` of every row."""
    med = {(r["model"], r["batch"], r["variant"], r["runtime"]): r.get("median_ms")
           for r in rows}
    for r in rows:
        same = med.get((r["model"], r["batch"], "dense", r["runtime"]))
        base = med.get((r["model"], r["batch"], "dense", "eval"))
        mine = r.get("median_ms")
        r["ratio"] = mine / same if mine is not None and same else None
        r["ratio_vs_dense_eval"] = mine / base if mine is not None and base else None


# ------------------------------------------------------------------ goals and tables


def goals(rows: Sequence[Mapping[str, Any]], cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals from the rows: one entry per (runtime goal, model), with the ratio
    (compressed at ``goal_budget`` / dense, same runtime, at ``goal_batch``), the target and
    ``passed`` (None: not measured, e.g. a runtime that failed or was not asked for).

    ``cfg["goals"]`` maps a runtime to its target; ``"compile"`` covers every compile mode."""
    out = []
    label = _label(cfg["budget_kind"], cfg["goal_budget"])
    models = list(dict.fromkeys(r["model"] for r in rows))
    for goal, target in cfg["goals"].items():
        runtimes = sorted({r["runtime"] for r in rows if r["runtime"] == goal
                           or r["runtime"].startswith(f"{goal}:")}) or [goal]
        for runtime in runtimes:
            for model in models:
                cell = next((r for r in rows if r["model"] == model and r["runtime"] == runtime
                             and r["variant"] == label and r["batch"] == cfg["goal_batch"]),
                            None)
                ratio = None if cell is None else cell.get("ratio")
                out.append({"goal": f"{runtime}: {label} / dense <= {target:g}x at batch "
                                    f"{cfg['goal_batch']}", "runtime": runtime, "model": model,
                            "target": target, "ratio": ratio,
                            "passed": None if ratio is None else ratio <= target,
                            "why_not": None if ratio is not None else (
                                (cell or {}).get("error") or "not measured")})
    return out


def batch_one_summary(rows: Sequence[Mapping[str, Any]], cfg: Mapping[str, Any]) -> list[str]:
    """Lines comparing the goal budget's ratios at batch 1 with those at the goal batch."""
    label = _label(cfg["budget_kind"], cfg["goal_budget"])
    by = {(r["model"], r["batch"], r["runtime"]): r.get("ratio") for r in rows
          if r["variant"] == label}
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        parts = []
        for rt in _runtime_keys(cfg):
            one, big = by.get((model, 1, rt)), by.get((model, cfg["goal_batch"], rt))
            if one is None or big is None:
                continue
            parts.append(f"{rt} {one:.2f}x (batch {cfg['goal_batch']}: {big:.2f}x)")
        if parts:
            lines.append(f"{model}, {label} / dense at batch 1: " + "; ".join(parts))
    if lines:
        lines.append("batch 1: a ratio nearer 1 than at the larger batch means fixed per-call "
                     "and per-layer costs (dispatch, framework overhead, small-kernel launches),"
                     " which compression does not shrink, dominate there")
    return lines


def _ms(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _cell(r: Mapping[str, Any] | None, md: bool) -> str:
    """``ms ratio [vs dense eval]`` (``ms (**ratio**, vs dense eval)`` in Markdown); dense:
    ``ms [vs dense eval]``; a runtime that failed: ``failed``."""
    if r is None:
        return "-"
    if r.get("median_ms") is None:
        return "failed" if r.get("error") else "-"
    ms, same, base = _ms(r["median_ms"]), r.get("ratio"), r.get("ratio_vs_dense_eval")
    base_md = "" if base is None else f", {base:.2f}x"  # no dense eval timed: no second ratio
    base_txt = "" if base is None else f" [{base:.2f}]"
    if r["variant"] == "dense":
        if r["runtime"] == "eval" or base is None:
            return ms
        return f"{ms} ({base:.2f}x)" if md else f"{ms}{base_txt}"
    if same is None:
        return ms
    return f"{ms} (**{same:.2f}x**{base_md})" if md else f"{ms} {same:.2f}x{base_txt}"


def table(rows: Sequence[Mapping[str, Any]], cfg: Mapping[str, Any], *, md: bool = False
          ) -> str:
    """One table per (model, batch): a line per variant, a column per runtime."""
    rts = [rt for rt in _runtime_keys(cfg) if any(r["runtime"] == rt for r in rows)]
    title = {rt: RUNTIME_TITLES.get(rt.partition(":")[0], rt) + (
        f" ({rt.partition(':')[2]})" if ":" in rt else "") for rt in rts}
    out = []
    for model, batch in dict.fromkeys((r["model"], r["batch"]) for r in rows):
        mine = [r for r in rows if r["model"] == model and r["batch"] == batch]
        variants = list(dict.fromkeys(r["variant"] for r in mine))
        by = {(r["variant"], r["runtime"]): r for r in mine}
        head = ["variant", "params", "conv FLOPs", "inf. MACs", *(title[rt] for rt in rts)]
        body = []
        for v in variants:
            first = next(r for r in mine if r["variant"] == v)
            macs = first.get("inference_macs_fraction")
            body.append([v, f"{first['params_fraction']:.3f}",
                         f"{first['conv_flops_fraction']:.3f}",
                         "-" if macs is None else f"{macs:.3f}",
                         *(_cell(by.get((v, rt)), md) for rt in rts)])
        caption = f"{model}, batch {batch}: median ms"
        if md:
            out.append(f"**{caption}** (compressed: **/ dense in the same runtime**, / dense "
                       "eval)\n")
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
            out += ["| " + " | ".join(line) + " |" for line in body]
        else:
            out.append(f"{caption}; compressed: ratio to dense in the same runtime "
                       "[to dense eval]; dense: [to dense eval]")
            widths = [max(len(str(line[k])) for line in [head, *body]) for k in range(len(head))]
            for line in [head, *body]:
                out.append("  ".join(str(c).ljust(w) if k == 0 else str(c).rjust(w)
                                     for k, (c, w) in enumerate(zip(line, widths))))
        out.append("")
    return "\n".join(out)


def goal_lines(found: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    for g in found:
        why = "" if g["why_not"] in (None, "not measured") else f" ({g['why_not']})"
        verdict = ("PASS" if g["passed"] else "FAIL") if g["passed"] is not None else \
            f"not measured{why}"
        ratio = "-" if g["ratio"] is None else f"{g['ratio']:.3f}x"
        out.append(f"{g['goal']}, {g['model']}: {ratio} -> {verdict}")
    return out


def readme(result: Mapping[str, Any]) -> str:
    """The README section of a finished run: environment line, tables, goals, batch 1."""
    cfg, env = result["config"], result["environment"]
    busy = " (machine busy: load above the core count)" if env.get("busy") else ""
    ort = result.get("onnxruntime") or "not installed"
    lines = [f"Measured {env['timestamp'][:10]} on {env['device_name']}, torch "
             f"{env['torch']}, onnxruntime {ort}, {env['threads']} threads{busy}, "
             f"{cfg['dtype']}; allocate={cfg['allocate']!r}, `{result['command']}`.\n",
             table(result["rows"], cfg, md=True), "Goals (issue 23):\n"]
    lines += [f"- {g}" for g in goal_lines(result["goals"])]
    lines += [""] + [f"- {g}" for g in result.get("batch_one", [])]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ main


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda (the GPU settings)")
    ap.add_argument("--quick", action="store_true", help="smoke run: init weights, one budget, "
                    "allocate='energy', few rounds, no cache")
    ap.add_argument("--models", nargs="+", default=None)
    ap.add_argument("--budgets", nargs="+", type=float, default=None)
    ap.add_argument("--budget-kind", choices=("params", "flops"), default=None)
    ap.add_argument("--allocate", default=None, help="compress(allocate=...)")
    ap.add_argument("--batches", nargs="+", type=int, default=None)
    ap.add_argument("--runtimes", nargs="+", choices=("eval", "eager", "compile", "onnx"),
                    default=None)
    ap.add_argument("--compile-modes", nargs="+", default=None,
                    help="torch.compile modes: default, reduce-overhead, max-autotune, ...")
    ap.add_argument("--path", choices=("measured", "flops", "dense", "factored"), default=None,
                    help="for_inference(path=...): how each factored layer's form is chosen")
    ap.add_argument("--dtype", default=None, help="float32, bfloat16, float16")
    ap.add_argument("--onnx-dtype", default=None, help="dtype of the ONNX export")
    ap.add_argument("--image-size", type=int, default=None, help="resnet50's H = W")
    ap.add_argument("--threads", type=int, default=None, help="torch and ORT intra-op threads")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds at least")
    ap.add_argument("--untrained", action="store_true",
                    help="a cached checkpoint if any, else a random init; never train")
    ap.add_argument("--no-cache", action="store_true", help="compress anew, cache nothing")
    ap.add_argument("--readme", action="store_true", help="also print the README section")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="measure nothing: print the tables and goals of this result")
    ap.add_argument("--out", type=Path, default=None, help="JSON path")
    return ap.parse_args(argv)


def config(args: argparse.Namespace) -> dict[str, Any]:
    """CONFIG, with CUDA's settings for ``--device cuda``, QUICK's for ``--quick``, then the
    flags given."""
    cfg = {**CONFIG, **(CUDA if args.device.startswith("cuda") else {}),
           **(QUICK if args.quick else {})}
    for key in ("models", "budgets", "budget_kind", "allocate", "batches", "runtimes", "path",
                "compile_modes", "dtype", "onnx_dtype", "image_size", "threads", "rounds"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.untrained:
        cfg["trained"] = False
    if args.no_cache:
        cfg["cache"] = False
    return cfg


def _render(result: Mapping[str, Any], show_readme: bool) -> None:
    print()
    print(table(result["rows"], result["config"]))
    print("Goals (issue 23):")
    for line in goal_lines(result["goals"]):
        print(f"  {line}")
    for line in result.get("batch_one", []):
        print(f"  {line}")
    if show_readme:
        print("\n--- README section ---\n")
        print(readme(result))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse(argv)
    if args.from_json is not None:
        result = json.loads(args.from_json.read_text())
        _render(result, args.readme)
        return result
    import torch

    cfg = config(args)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda asked for, but CUDA is not available")
    for dt in (cfg["dtype"], cfg["onnx_dtype"]):
        if not isinstance(getattr(torch, dt, None), torch.dtype):
            sys.exit(f"unknown dtype {dt!r}; use float32, bfloat16 or float16")
    if cfg["threads"] and device.type == "cpu":
        torch.set_num_threads(int(cfg["threads"]))
    torch.backends.cudnn.benchmark = bool(cfg["cudnn_benchmark"])
    for attr in ("recompile_limit", "cache_size_limit"):  # a compile per variant and batch
        if hasattr(torch._dynamo.config, attr):
            setattr(torch._dynamo.config, attr, 64)
    stem = f"bench_deploy_{device.type}" + ("_quick" if args.quick else "")
    out = args.out or RESULTS / f"{stem}.json"
    env = environment(device, packages=("onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript",
                                        "onnx_ir"))
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    result: dict[str, Any] = {
        "benchmark": "bench_deploy: dense and compressed models in torch eager (as trained "
                     "and in inference form), torch.compile and ONNX Runtime; ratios to dense "
                     "in the same runtime, measured interleaved in one run",
        "command": command_line(__file__, argv), "config": cfg, "onnxruntime": ort_version,
        "accuracy": "not this benchmark's subject: see bench_compress.py",
        "rows": [], "notes": {}, "goals": [], "batch_one": []}
    print(f"device {env['device_name']}, torch {torch.__version__}, onnxruntime "
          f"{ort_version}, {torch.get_num_threads()} threads; allocate={cfg['allocate']!r}, "
          f"{cfg['budget_kind']} {cfg['budgets']}, batches {cfg['batches']}", flush=True)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_deploy_") as tmp:
        for name in cfg["models"]:
            rows, notes = run_model(name, cfg, device, Path(tmp))
            result["rows"] += rows
            result["notes"][name] = notes
            result["goals"] = goals(result["rows"], cfg)
            result["batch_one"] = batch_one_summary(result["rows"], cfg)
            result["elapsed_s"] = round(time.perf_counter() - t_start, 1)
            write_result(stem, result, out, env=env)
    _render({**result, "environment": env}, args.readme)
    print(f"\nwrote {out} in {result['elapsed_s']:.0f} s")
    return result


if __name__ == "__main__":
    main()
