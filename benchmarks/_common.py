"""What every benchmark script in this folder shares: its environment block, timing, results.

The scripts (``bench_*.py``, ``compress_latency.py``, ``mutation_check.py``) are run as
``python benchmarks/NAME.py``, so this folder is ``sys.path[0]`` and they import this module as
a sibling (``from _common import ...``) without touching ``sys.path``; no script imports
another one: what two of them need goes here. Only the standard library is imported at module
level (torch, numpy and tnconv are imported where a function needs them), so ``--help`` stays
quick.

* :func:`environment`: the one shape of a result's ``"environment"`` block (versions, CPU or
  CUDA card and driver, threads, load average, a ``busy`` flag, a timestamp);
* :func:`interleaved`: time candidates round after round (A, B, A, B, ...) after warm-up
  rounds, so that load drift on a shared machine hits them alike; a :class:`Timing` per
  candidate (every round's seconds, median, best, spread, the last result);
  :func:`wall_clock` / :func:`cuda_clock` time one call, :func:`sync` waits for a device;
* :func:`write_result`: the JSON under ``benchmarks/results/``, with the environment block,
  written atomically; :func:`command_line`: the command recorded in it;
* shared inputs: :func:`split_data` (the sensitivity / held-out / fine-tuning split of
  ``bench_compress.py``, also used by ``bench_datafit.py`` and ``compress_latency.py``),
  :func:`checkpoint_or_init` (a cached checkpoint, else a fixed random init),
  :func:`trained_kernels` (the conv kernels of trained models), :func:`conv_params`.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - annotations only
    import torch
    from torch import nn

__all__ = ["RESULTS", "SPLIT", "Timing", "checkpoint_or_init", "command_line", "conv_params",
           "cpu_name", "cuda_clock", "environment", "interleaved", "load_average", "split_data",
           "sync", "trained_kernels", "wall_clock", "write_result"]

#: Where :func:`write_result` puts a result by default.
RESULTS: Path = Path(__file__).resolve().parent / "results"

#: The test / training split of ``bench_compress.py`` (and of the scripts that reuse it):
#: ``sens_images`` test images for the sensitivity sweep (or the data fit), ``heldout_images``
#: other test images for every accuracy, ``finetune_images`` training images (None: all).
SPLIT: dict[str, Any] = {"sens_images": 1000, "heldout_images": 5000,
                         "finetune_images": 10000, "seed": 0}

#: Distribution names of the packages whose import name differs (for their versions).
_DISTRIBUTIONS = {"tltorch": "tensorly-torch"}


# ------------------------------------------------------------------ environment


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _version(module: str) -> str:
    """The version of ``module`` (not imported for it when it is not yet), or "not installed"."""
    loaded = sys.modules.get(module)
    if loaded is not None and hasattr(loaded, "__version__"):
        return str(loaded.__version__)
    from importlib import metadata

    for dist in (_DISTRIBUTIONS.get(module, module), module.replace("_", "-")):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages now (None where the platform has none)."""
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _busy(*loads: list[float] | None) -> bool | None:
    """Whether a 1-minute load average exceeds the core count (None: not known)."""
    cores, known = os.cpu_count(), [load[0] for load in loads if load]
    if not cores or not known:
        return None
    return max(known) > cores


def _nvidia_driver() -> str | None:
    """The NVIDIA driver version (``/proc/driver/nvidia/version``, else ``nvidia-smi``)."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
        for word in text.split():
            if word[:1].isdigit() and word.count(".") >= 1:
                return word
    except OSError:
        pass
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0].strip() if out else None


def environment(device: Any = None, *, packages: Iterable[str] = ()) -> dict[str, Any]:
    """The ``"environment"`` block of a result, taken now (call it when the run starts).

    Keys: ``timestamp``, ``python``, ``platform``, ``torch``, ``numpy``, ``tnconv``,
    ``versions`` (of the optional ``packages``: a version or "not installed"), ``device``,
    ``device_name`` (the CUDA card, else the CPU), ``cpu``, ``cpu_count``, ``threads`` (torch
    intra-op threads), ``cuda`` (None on CPU, else ``card``, ``driver``, ``cuda``,
    ``memory_gib``, ``capability``), ``load_average`` (1, 5, 15 minutes) and ``busy`` (a
    1-minute load average above the core count). :func:`write_result` adds
    ``load_average_end``.
    """
    import numpy
    import torch

    import tnconv

    dev = torch.device("cpu" if device is None else device)
    cuda = None
    if dev.type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(dev)
        cuda = {"card": torch.cuda.get_device_name(dev), "driver": _nvidia_driver(),
                "cuda": torch.version.cuda, "memory_gib": round(props.total_memory / 2**30, 1),
                "capability": f"{props.major}.{props.minor}"}
    load = load_average()
    return {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "tnconv": tnconv.__version__,
        "versions": {p: _version(p) for p in packages},
        "device": str(dev),
        "device_name": cuda["card"] if cuda else cpu_name(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cuda": cuda,
        "load_average": load,
        "busy": _busy(load),
    }


def command_line(script: str, argv: Sequence[str] | None = None) -> str:
    """``python benchmarks/<script's file name> ARGS``: ``argv``, else this process's own."""
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", f"benchmarks/{Path(script).name}", *map(str, args)])


# ------------------------------------------------------------------ results


def write_result(name: str, payload: Mapping[str, Any], out: str | os.PathLike | None = None,
                 *, env: Mapping[str, Any] | None = None) -> Path:
    """Write ``payload`` and its environment block as JSON; returns the path.

    ``out`` (default ``benchmarks/results/<name>.json``); ``env``: the block of
    :func:`environment` taken when the run started (default ``payload["environment"]``, else
    one taken now), to which ``load_average_end`` is added (and ``busy`` updated). The file is
    written to a temporary file next to it and renamed, so a reader (or an interrupted run)
    never sees half of it.
    """
    path = Path(out) if out is not None else RESULTS / f"{name}.json"
    base = dict(env if env is not None else payload.get("environment") or environment())
    end = load_average()
    base.update(load_average_end=end, busy=_busy(base.get("load_average"), end))
    record = {**{k: v for k, v in payload.items() if k != "environment"}, "environment": base}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record, indent=2, default=str) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ------------------------------------------------------------------ timing


@dataclass
class Timing:
    """One candidate's timed rounds: seconds per round (in order) and its last result."""

    times: list[float] = field(default_factory=list)
    result: Any = None

    @property
    def total(self) -> float:
        """Seconds of all rounds."""
        return sum(self.times)

    @property
    def median(self) -> float:
        """Median seconds per round."""
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        """Fastest round (seconds)."""
        return min(self.times)

    @property
    def mean(self) -> float:
        """Mean seconds per round."""
        return statistics.mean(self.times)

    @property
    def std(self) -> float:
        """Sample standard deviation of the rounds (0 for one round)."""
        return statistics.stdev(self.times) if len(self.times) > 1 else 0.0

    @property
    def spread(self) -> tuple[float, float]:
        """The 10th and 90th percentiles of the rounds (the one round twice for one)."""
        if len(self.times) < 2:
            return self.times[0], self.times[0]
        q = statistics.quantiles(self.times, n=10)
        return q[0], q[-1]

    def summary(self) -> dict[str, float]:
        """``rounds``, ``median_s``, ``best_s``, ``mean_s``, ``std_s``, ``p10_s``, ``p90_s``."""
        p10, p90 = self.spread
        return {"rounds": len(self.times), "median_s": self.median, "best_s": self.best,
                "mean_s": self.mean, "std_s": self.std, "p10_s": p10, "p90_s": p90}


Clock = Callable[[Callable[[], Any]], tuple[Any, float]]


def wall_clock(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``(fn(), seconds)`` by :func:`time.perf_counter`."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def cuda_clock(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``(fn(), seconds)`` between two CUDA events around the call (synchronised)."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    out = fn()
    end.record()
    torch.cuda.synchronize()
    return out, start.elapsed_time(end) / 1e3


def sync(device: Any) -> None:
    """Wait for the queued work of ``device`` when it is a CUDA device; nothing on the CPU."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def interleaved(calls: Mapping[str, Callable[[], Any]], rounds: int, *, warmup: int = 0,
                min_total_s: float = 0.0, max_rounds: int | None = None,
                clock: Clock = wall_clock) -> dict[str, Timing]:
    """Time every call of ``calls`` round after round (A, B, A, B, ...): a :class:`Timing`
    per name, in the order of ``calls``.

    ``warmup`` untimed rounds first (interleaved as well). At least ``rounds`` timed rounds;
    more, up to ``max_rounds``, while some call has run less than ``min_total_s`` seconds in
    all (millisecond calls: a best of 3 at 0.1 ms is mostly noise). ``clock`` times one call
    (:func:`wall_clock`, or :func:`cuda_clock` for CUDA work).
    """
    if not calls:
        return {}
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    out = {name: Timing() for name in calls}
    limit = rounds if max_rounds is None else max(rounds, max_rounds)
    done = 0
    while done < rounds or (done < limit and min(t.total for t in out.values()) < min_total_s):
        for name, fn in calls.items():
            res, dt = clock(fn)
            out[name].times.append(dt)
            out[name].result = res
        done += 1
    return out


# ------------------------------------------------------------------ shared inputs


def split_data(test: Any, train: Any, cfg: Mapping[str, Any] = SPLIT) -> tuple[Any, Any, Any]:
    """(sensitivity subset, disjoint held-out subset, fine-tuning subset) of ImageDatasets.

    ``cfg``: :data:`SPLIT`'s keys. The test split is permuted with ``seed``; the first
    ``sens_images`` are the sensitivity subset, the next ``heldout_images`` the held-out one.
    """
    import torch

    gen = torch.Generator().manual_seed(cfg["seed"])
    perm = torch.randperm(len(test), generator=gen)
    n_s, n_h = cfg["sens_images"], cfg["heldout_images"]
    if n_s + n_h > len(test):
        raise ValueError(f"sens_images + heldout_images = {n_s + n_h} > {len(test)} test images")
    sens, held = test.subset(perm[:n_s]), test.subset(perm[n_s:n_s + n_h])
    n_t = cfg["finetune_images"]
    tune = train if n_t is None or n_t >= len(train) else train.subset(n_t, seed=cfg["seed"])
    return sens, held, tune


def checkpoint_or_init(model_name: str, dataset: str, init: Callable[[], nn.Module],
                       device: Any = "cpu") -> tuple[nn.Module, str]:
    """``(model in eval mode, where it came from)``: the cached trained checkpoint
    (:func:`tnconv.checkpoints.default_checkpoint_path`) when there is one, never trained here;
    else ``init()`` after ``torch.manual_seed(0)``, a fixed random init."""
    import torch

    from tnconv.checkpoints import default_checkpoint_path, load_checkpoint

    path = default_checkpoint_path(model_name, dataset)
    if path.is_file():
        model, _ = load_checkpoint(path, map_location=device)
        return model.eval(), f"checkpoint {path}"
    torch.manual_seed(0)
    return init().to(device).eval(), "random init (no cached checkpoint)"


def trained_kernels(models: Iterable[str], dataset: str = "fashion-mnist", *, sep: str = "/",
                    one_by_one: Iterable[str] = (), cached_only: bool = False,
                    progress: bool = True) -> list[tuple[str, torch.Tensor]]:
    """The conv kernels of trained models: ``("<model><sep><layer>", detached weight)``.

    Every 4-d kernel with ``kh * kw > 1``, and the 1x1 ones named in ``one_by_one``. The
    models come from :func:`tnconv.train_or_load` (trained now when not in the checkpoint
    cache), or, with ``cached_only``, only from the cache (a model without a checkpoint is
    skipped, with a line saying so).
    """
    import tnconv
    from tnconv.checkpoints import default_checkpoint_path

    keep = set(one_by_one)
    out = []
    for model_name in models:
        if cached_only and not default_checkpoint_path(model_name, dataset).is_file():
            print(f"no checkpoint for {model_name}: skipped")
            continue
        model, _ = tnconv.train_or_load(model_name, dataset, device="cpu", progress=progress)
        for name, m in tnconv.conv_layers(model):
            w = m.weight.detach()
            full = f"{model_name}{sep}{name}"
            if w.dim() == 4 and (w.shape[2] * w.shape[3] > 1 or full in keep):
                out.append((full, w))
    return out


def conv_params(model: nn.Module) -> int:
    """Parameters (weights and biases) of a model's conv layers: ``nn.Conv2d``, tnconv's
    factored layers, tensorly-torch's ``FactorizedConv``."""
    from torch import nn

    from tnconv.layers import FactorizedConv2d

    total = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, FactorizedConv2d)) or type(m).__name__ == "FactorizedConv":
            total += sum(p.numel() for p in m.parameters())
    return total
