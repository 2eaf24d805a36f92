"""Training, evaluation and checkpoints for tnconv's models.

:func:`fit` trains any :class:`torch.nn.Module` classifier on an :class:`~tnconv.data.ImageDataset`
(SGD with Nesterov momentum or AdamW, one-cycle / cosine / constant schedule, label smoothing,
bf16 autocast on CUDA, channels_last); :func:`evaluate` measures top-1 (and top-5) accuracy and
loss; :func:`save_checkpoint` / :func:`load_checkpoint` store a model with its metadata, and
:func:`train_or_load` is what examples call to get a trained model once and reuse it.

The per model / dataset / device defaults are in :data:`TRAIN_DEFAULTS`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageDataset, as_tensors, canonical_name, load_dataset

__all__ = [
    "CHECKPOINT_FORMAT",
    "OPTIMIZERS",
    "SCHEDULES",
    "TRAIN_DEFAULTS",
    "default_checkpoint_path",
    "evaluate",
    "fit",
    "load_checkpoint",
    "resolve_device",
    "save_checkpoint",
    "train_config",
    "train_or_load",
]

OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")
SCHEDULES: tuple[str, ...] = ("onecycle", "cosine", "constant")
CHECKPOINT_FORMAT = "tnconv-checkpoint"
_CHECKPOINT_VERSION = 1
_REQUIRED_META = ("model", "num_classes", "in_channels")

#: Training defaults by (model, dataset, device type); ``"*"`` matches anything.
#: lr is the peak learning rate; batch_size in images; weight_decay is L2 (SGD) or decoupled
#: (AdamW). The CPU row for cnn4 / Fashion-MNIST is sized to reach >= 91 % test accuracy in
#: under 10 minutes on a 2-core CPU (see benchmarks/results/).
TRAIN_DEFAULTS: dict[tuple[str, str, str], dict[str, Any]] = {
    ("*", "*", "*"): dict(
        epochs=10, batch_size=256, optimizer="sgd", lr=0.1, schedule="onecycle",
        label_smoothing=0.1, weight_decay=5e-4, augment=True,
    ),
    # 3 epochs underfit, so augmentation only costs accuracy here (with it: 91.00 %, see
    # benchmarks/results/cnn4-fashion-mnist-cpu-augment.json)
    ("cnn4", "fashion-mnist", "cpu"): dict(epochs=3, batch_size=256, lr=0.1, augment=False),
    ("cnn4", "mnist", "cpu"): dict(epochs=3, batch_size=256, lr=0.1),
    ("cnn4", "fashion-mnist", "cuda"): dict(epochs=20, batch_size=256, lr=0.1),
    ("cnn4", "cifar10", "*"): dict(epochs=40, batch_size=256, lr=0.1),
    ("cnn4", "cifar100", "*"): dict(epochs=40, batch_size=256, lr=0.1),
    ("resnet50", "*", "cuda"): dict(epochs=30, batch_size=512, lr=0.2),
    ("resnet50", "fashion-mnist", "cuda"): dict(epochs=15, batch_size=512, lr=0.2),
    ("resnet50", "*", "cpu"): dict(epochs=2, batch_size=128, lr=0.05),
}


def train_config(model_name: str, dataset: str, device: str | torch.device) -> dict[str, Any]:
    """Default training options for a model, dataset and device (from :data:`TRAIN_DEFAULTS`).

    Examples
    --------
    >>> train_config("cnn4", "fashion-mnist", "cpu")["epochs"]
    3
    """
    dtype = torch.device(device).type
    dtype = "cuda" if dtype == "cuda" else "cpu"
    key = (model_name.lower(), canonical_name(dataset), dtype)
    config: dict[str, Any] = {}
    # least specific first, so later (more specific) rows override
    for pattern in sorted(TRAIN_DEFAULTS, key=lambda k: sum(p != "*" for p in k)):
        if all(p in ("*", k) for p, k in zip(pattern, key, strict=True)):
            config.update(TRAIN_DEFAULTS[pattern])
    return config


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Turn ``"auto"`` / None into ``cuda`` when available, else ``cpu``; check the rest.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"invalid device {device!r}; use 'auto', 'cpu' or 'cuda'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'cpu'")
    return dev


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _iter_batches(data: Any, batch_size: int, device: torch.device
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(data, ImageDataset):
        yield from data.to(device).batches(batch_size)
        return
    # asynchronous only towards CUDA: a non-blocking copy to the host may be read unfinished
    non_blocking = device.type == "cuda"
    if (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, torch.Tensor) for t in data) and data[0].dim() == 4):
        # one (images N x C x H x W, labels N) pair, as tnconv.sweep accepts it
        images, labels = as_tensors(data)
        labels = labels.long()
        for i in range(0, len(images), batch_size):
            yield (images[i:i + batch_size].to(device, non_blocking=non_blocking),
                   labels[i:i + batch_size].to(device, non_blocking=non_blocking))
        return
    for item in data:
        x, y = item[0], item[1]
        yield x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)


def evaluate(
    model: nn.Module,
    data: ImageDataset | Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    batch_size: int = 1000,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy of ``model`` on ``data`` (top-5 for >= 100 classes).

    Runs batched under ``torch.no_grad()`` in eval mode (the model's train/eval mode is restored
    afterwards), with bf16 autocast on CUDA. The loss is plain cross-entropy, without label
    smoothing.

    Parameters
    ----------
    model : torch.nn.Module
        Classifier returning logits N x num_classes.
    data : ImageDataset, (images, labels) tensors, or iterable of (x, y) batches
        The images; an ImageDataset or an ``(images, labels)`` pair is cut into
        ``batch_size`` batches.
    batch_size : int, default 1000
        Images per batch (ImageDataset or tensor pair).
    device : str or torch.device, optional
        Where to run; default the model's device. The model is not moved: pass data or use a
        model that is already there.

    Returns
    -------
    dict
        ``accuracy`` (fraction in [0, 1]), ``loss``, ``n`` and, when the model has 100 or more
        outputs, ``top5``.

    Examples
    --------
    >>> from tnconv.data import ImageDataset
    >>> from tnconv.models import cnn4
    >>> ds = ImageDataset(torch.zeros(8, 1, 32, 32), torch.zeros(8, dtype=torch.long),
    ...                   "mnist", "test")
    >>> sorted(evaluate(cnn4(10, 1), ds))
    ['accuracy', 'loss', 'n']
    """
    dev = _model_device(model) if device is None else resolve_device(device)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    correct5 = torch.zeros((), dtype=torch.int64, device=dev)
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    n = 0
    num_outputs = 0
    try:
        with torch.no_grad(), _autocast(dev):
            for x, y in _iter_batches(data, batch_size, dev):
                logits = model(x).float()
                num_outputs = logits.shape[1]
                loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
                correct += (logits.argmax(1) == y).sum()
                if num_outputs >= 100:
                    top5 = logits.topk(5, dim=1).indices
                    correct5 += (top5 == y[:, None]).any(1).sum()
                n += int(y.shape[0])
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("evaluate got no data (empty dataset or iterable)")
    out = {"accuracy": correct.item() / n, "loss": loss_sum.item() / n, "n": n}
    if num_outputs >= 100:
        out["top5"] = correct5.item() / n
    return out


def _make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float
                    ) -> torch.optim.Optimizer:
    # no weight decay on biases and normalisation parameters
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=lr)


def _make_schedule(opt: torch.optim.Optimizer, name: str, lr: float, total_steps: int
                   ) -> torch.optim.lr_scheduler.LRScheduler:
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=total_steps, pct_start=0.25,
            div_factor=10.0, final_div_factor=100.0,
        )
    if name == "cosine":
        warmup = min(max(total_steps // 20, 1), total_steps)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            t = (step - warmup) / max(total_steps - warmup, 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))

        return torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)


def fit(
    model: nn.Module,
    train_data: ImageDataset,
    *,
    epochs: int,
    lr: float | None = None,
    optimizer: str = "sgd",
    schedule: str = "onecycle",
    label_smoothing: float = 0.1,
    weight_decay: float | None = None,
    batch_size: int = 256,
    augment: bool = True,
    eval_data: ImageDataset | tuple[torch.Tensor, torch.Tensor] | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
    channels_last: bool = True,
    callback: Callable[[nn.Module, int], None] | None = None,
    step_callback: Callable[[nn.Module], None] | None = None,
) -> list[dict[str, float]]:
    """Train a classifier in place and return its history, one dict per epoch.

    Parameters
    ----------
    model : torch.nn.Module
        Any classifier mapping N x C x H x W images to N x num_classes logits. It is trained in
        place on ``device`` (moved there if needed, and to channels_last memory format when
        ``channels_last``); it is left in eval mode.
    train_data : ImageDataset
        Training images; copied once to ``device`` and batched there.
    epochs : int
        Passes over ``train_data``.
    lr : float, optional
        Peak learning rate; default 0.1 for SGD, 1e-3 for AdamW.
    optimizer : {"sgd", "adamw"}, default "sgd"
        SGD with Nesterov momentum 0.9, or AdamW.
    schedule : {"onecycle", "cosine", "constant"}, default "onecycle"
        Learning-rate schedule over all steps (one-cycle: 25 % warm-up from lr/10, anneal to
        lr/1000; cosine: 5 % linear warm-up then cosine to 0).
    label_smoothing : float, default 0.1
        Label smoothing of the training loss.
    weight_decay : float, optional
        Default 5e-4 (SGD, L2) or 0.05 (AdamW, decoupled); biases and norms are not decayed.
    batch_size : int, default 256
        Images per step; the last incomplete batch of each epoch is dropped (kept if it would
        be the only one).
    augment : bool, default True
        The dataset's training augmentation (see :meth:`ImageDataset.batches`).
    eval_data : ImageDataset or (images, labels) tensors, optional
        Evaluated after every epoch (adds ``eval_accuracy``, ``eval_loss``, maybe ``eval_top5``).
    device : str or torch.device, optional
        Default: the model's device. ``"auto"`` picks CUDA when available.
    seed : int, default 0
        Seeds the batch order, augmentation and torch's global RNG (forked, so the caller's RNG
        state is untouched). Runs on CPU are bit-for-bit reproducible.
    progress : bool, default True
        tqdm bar per epoch with live loss and accuracy.
    channels_last : bool, default True
        Use channels_last memory format (faster for convolutions on CUDA and on CPU).
    callback : callable, optional
        ``callback(model, epoch)`` after every epoch (after evaluation), ``epoch`` from 1.
    step_callback : callable, optional
        ``step_callback(model)`` right after every ``optimizer.step()``, e.g. to project the
        weights back onto a truncated subspace. Runs under ``torch.no_grad()``.

    Returns
    -------
    list of dict
        Per epoch: ``epoch``, ``train_loss``, ``train_accuracy``, ``lr`` (at the epoch's end),
        ``time`` (seconds), and the ``eval_*`` entries when ``eval_data`` is given.

    Examples
    --------
    >>> from tnconv.data import ImageDataset
    >>> from tnconv.models import cnn4
    >>> ds = ImageDataset(torch.randn(64, 1, 32, 32), torch.randint(0, 10, (64,)),
    ...                   "mnist", "train")
    >>> history = fit(cnn4(10, 1), ds, epochs=1, batch_size=32, progress=False)
    >>> sorted(history[0])
    ['epoch', 'lr', 'time', 'train_accuracy', 'train_loss']
    """
    if not isinstance(train_data, ImageDataset):
        raise TypeError(
            f"train_data must be a tnconv.data.ImageDataset, got {type(train_data).__name__}"
        )
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if lr is None:
        lr = 0.1 if optimizer == "sgd" else 1e-3
    if weight_decay is None:
        weight_decay = 5e-4 if optimizer == "sgd" else 0.05
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")

    dev = _model_device(model) if device is None else resolve_device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device=dev, memory_format=fmt)
    data = train_data.to(dev)
    eval_set = eval_data.to(dev) if isinstance(eval_data, ImageDataset) else eval_data
    drop_last = len(data) >= 2 * batch_size
    steps = data.num_batches(batch_size, drop_last=drop_last)
    opt = _make_optimizer(model, optimizer, lr, weight_decay)
    sched = _make_schedule(opt, schedule, lr, steps * epochs)
    gen = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []

    # torch.manual_seed seeds every CUDA device too: restore all of them afterwards
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            model.train()
            loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
            correct = torch.zeros((), dtype=torch.int64, device=dev)
            seen = 0
            batches = data.batches(
                batch_size, shuffle=True, augment=augment, generator=gen, drop_last=drop_last
            )
            bar = _progress(batches, steps, f"epoch {epoch}/{epochs}", progress)
            for i, (x, y) in enumerate(bar, start=1):
                x = x.contiguous(memory_format=fmt)
                with _autocast(dev):
                    logits = model(x)
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if step_callback is not None:
                    with torch.no_grad():
                        step_callback(model)
                with torch.no_grad():
                    loss_sum += loss.detach().double() * y.shape[0]
                    correct += (logits.argmax(1) == y).sum()
                seen += int(y.shape[0])
                if progress and (i % 10 == 0 or i == steps):
                    bar.set_postfix(  # type: ignore[union-attr]
                        loss=f"{loss_sum.item() / seen:.3f}",
                        acc=f"{correct.item() / seen:.3f}",
                    )
            if seen == 0:
                raise ValueError("train_data is empty")
            record: dict[str, float] = {
                "epoch": epoch,
                "train_loss": loss_sum.item() / seen,
                "train_accuracy": correct.item() / seen,
                "lr": opt.param_groups[0]["lr"],
            }
            if eval_set is not None:
                result = evaluate(model, eval_set, device=dev)
                for key in ("accuracy", "loss", "top5"):
                    if key in result:
                        record[f"eval_{key}"] = result[key]
            record["time"] = time.perf_counter() - start
            history.append(record)
            if progress:
                _print_epoch(record)
            if callback is not None:
                callback(model, epoch)
    model.eval()
    return history


def _progress(it: Iterable, total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc, leave=False, dynamic_ncols=True)


def _print_epoch(record: dict[str, float]) -> None:
    from tqdm.auto import tqdm

    parts = [f"epoch {int(record['epoch'])}: train loss {record['train_loss']:.4f}",
             f"acc {record['train_accuracy']:.4f}"]
    if "eval_accuracy" in record:
        parts.append(f"eval loss {record['eval_loss']:.4f} acc {record['eval_accuracy']:.4f}")
    tqdm.write(", ".join(parts) + f" ({record['time']:.1f} s)")


# -- checkpoints ------------------------------------------------------------------------------


def _cache_dir() -> Path:
    env = os.environ.get("TNCONV_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tnconv"


def default_checkpoint_path(model_name: str, dataset: str) -> Path:
    """Where :func:`train_or_load` keeps the checkpoint of ``model_name`` on ``dataset``.

    ``$TNCONV_CACHE/checkpoints/<model>-<dataset>.pt``, with ``$TNCONV_CACHE`` defaulting to
    ``~/.cache/tnconv``.

    Examples
    --------
    >>> default_checkpoint_path("cnn4", "fashion_mnist").name
    'cnn4-fashion-mnist.pt'
    """
    if not isinstance(model_name, str) or not model_name.strip():
        raise ValueError(f"model_name must be a non-empty str, got {model_name!r}")
    name = model_name.strip().lower()
    return _cache_dir() / "checkpoints" / f"{name}-{canonical_name(dataset)}.pt"


def _infer_sizes(model: nn.Module) -> dict[str, int]:
    found: dict[str, int] = {}
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if convs:
        found["in_channels"] = convs[0].in_channels
    if linears:
        found["num_classes"] = linears[-1].out_features
    return found


def _plain(value: Any) -> Any:
    """Metadata as plain Python types, so that ``torch.load(weights_only=True)`` reads it."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return str(value)  # torch.device, Path, TorchVersion, ...


def _checksum(meta: dict[str, Any], state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the metadata and of every tensor's name, dtype, shape and bytes (CPU)."""
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def save_checkpoint(model: nn.Module, path: str | os.PathLike, *, meta: dict[str, Any]) -> Path:
    """Save ``model``'s weights and metadata to ``path`` atomically.

    The file is written to a temporary file in the same folder and renamed over ``path``, so a
    crash never leaves a half-written checkpoint. A SHA-256 of the metadata and weights is
    stored with them, so :func:`load_checkpoint` detects corrupted bytes.

    Parameters
    ----------
    model : torch.nn.Module
        The model; its ``state_dict`` is stored (as contiguous CPU tensors).
    path : path
        Destination (folders are created).
    meta : dict
        Must name ``model`` (a :func:`tnconv.models.get_model` name); ``num_classes`` and
        ``in_channels`` are inferred from the model when absent. Usual extra keys: ``dataset``,
        ``accuracy``, ``epochs``, ``model_kwargs`` (passed to ``get_model`` on loading).
        ``torch_version``, ``tnconv_version`` and ``date`` are added. Values should be plain
        Python types (str, int, float, bool, lists, dicts).

    Returns
    -------
    Path
        The checkpoint's path.

    Examples
    --------
    >>> from tnconv.models import cnn4
    >>> save_checkpoint(cnn4(10, 1), "/tmp/c.pt", meta={"model": "cnn4"})  # doctest: +SKIP
    PosixPath('/tmp/c.pt')
    """
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    if not isinstance(meta.get("model"), str):
        raise ValueError(f"meta must name the model (meta['model'] = 'cnn4', ...), got {meta!r}")
    from . import __version__

    full = _plain({**_infer_sizes(model), **meta})
    missing = [k for k in _REQUIRED_META if k not in full]
    if missing:
        raise ValueError(f"meta lacks {', '.join(missing)} and they cannot be inferred")
    full.setdefault("torch_version", str(torch.__version__))
    full.setdefault("tnconv_version", __version__)
    full.setdefault("date", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": _CHECKPOINT_VERSION,
        "meta": full,
        "state_dict": state,
        "sha256": _checksum(full, state),
    }
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    expect: dict[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : path
        The checkpoint file.
    model : torch.nn.Module, optional
        Load the weights into this model; by default the model is rebuilt with
        :func:`tnconv.models.get_model` from the metadata (``model``, ``num_classes``,
        ``in_channels``, ``model_kwargs``).
    expect : dict, optional
        Metadata the checkpoint must have, e.g. ``{"model": "cnn4", "dataset": "cifar10"}``.
    map_location : str or torch.device, default "cpu"
        Where the weights (and the returned model) go.

    Returns
    -------
    (model, meta)
        The model in eval mode and the metadata dict.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Not a tnconv checkpoint, truncated or corrupt (including contents that do not match the
        stored SHA-256), metadata differing from ``expect``, or weights not fitting the model.

    Examples
    --------
    >>> model, meta = load_checkpoint("cnn4-fashion-mnist.pt")  # doctest: +SKIP
    >>> meta["accuracy"]  # doctest: +SKIP
    0.92
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zips, pickles and garbage raise many exception types
        raise ValueError(
            f"{path} is not a readable tnconv checkpoint (truncated or corrupt?): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a tnconv checkpoint (no '{CHECKPOINT_FORMAT}' header)")
    if payload.get("version") != _CHECKPOINT_VERSION:
        raise ValueError(
            f"{path} has checkpoint version {payload.get('version')!r}; "
            f"this tnconv reads version {_CHECKPOINT_VERSION}"
        )
    meta = payload.get("meta")
    state = payload.get("state_dict")
    if not isinstance(meta, dict) or not isinstance(state, dict):
        raise ValueError(f"{path} is corrupt: missing metadata or weights")
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is corrupt: its weights are not all tensors")
    stored = payload.get("sha256")  # absent in files written before checksums were added
    if stored is not None and stored != _checksum(meta, state):
        raise ValueError(f"{path} is corrupt: its contents do not match the stored checksum")
    missing = [k for k in _REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"{path} is corrupt: metadata lacks {', '.join(missing)}")
    for key, want in (expect or {}).items():
        have = meta.get(key)
        if key == "dataset" and isinstance(want, str) and isinstance(have, str):
            want, have = canonical_name(want), canonical_name(have)
        if have != want:
            raise ValueError(
                f"{path} does not match: {key} is {meta.get(key)!r}, expected {want!r}"
            )
    if model is None:
        from .models import get_model

        model = get_model(
            meta["model"], meta["num_classes"], meta["in_channels"],
            **meta.get("model_kwargs", {}),
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError(f"weights in {path} do not fit the model: {first}") from exc
    model.to(map_location)
    model.eval()
    return model, meta


# -- the one-call helper for examples ------------------------------------------------------------


def train_or_load(
    model_name: str,
    dataset: str,
    *,
    epochs: int | None = None,
    device: str | torch.device | None = None,
    cache: bool = True,
    seed: int = 0,
    progress: bool = True,
    root: str | os.PathLike | None = None,
    **overrides: Any,
) -> tuple[nn.Module, dict[str, Any]]:
    """A trained ``model_name`` for ``dataset``: from the checkpoint cache, or trained now.

    Looks for :func:`default_checkpoint_path` (when ``cache``); uses it if its metadata matches
    (model, dataset and, when given, ``epochs`` and every option in ``overrides``, compared with
    the checkpoint's ``train_config``). Otherwise trains with :func:`train_config`'s
    defaults (``overrides`` replace single options, e.g. ``lr=0.05``), evaluates on the test
    split, and saves the checkpoint (when ``cache``).

    Parameters
    ----------
    model_name : str
        A :func:`tnconv.models.get_model` name.
    dataset : str
        A :func:`tnconv.data.load_dataset` name.
    epochs : int, optional
        Training epochs; default from :data:`TRAIN_DEFAULTS`.
    device : str or torch.device, optional
        Default ``"auto"`` (CUDA when available).
    cache : bool, default True
        Read and write the checkpoint cache.
    seed : int, default 0
        Seeds the model initialisation and training.
    progress : bool, default True
        Progress bars while training.
    root : path, optional
        Data folder searched first by :func:`tnconv.data.load_dataset`.

    Returns
    -------
    (model, meta)
        The model on ``device`` in eval mode, and its metadata (``accuracy`` is test accuracy).

    Examples
    --------
    >>> model, meta = train_or_load("cnn4", "fashion-mnist")  # doctest: +SKIP
    >>> meta["accuracy"] > 0.91  # doctest: +SKIP
    True
    """
    from .models import get_model

    dev = resolve_device(device)
    name = canonical_name(dataset)
    model_key = model_name.strip().lower()
    path = default_checkpoint_path(model_key, name)
    if cache and path.is_file():
        expect: dict[str, Any] = {"model": model_key, "dataset": name}
        if epochs is not None:
            expect["epochs"] = epochs
        try:
            model, meta = load_checkpoint(path, expect=expect, map_location=dev)
            trained = meta.get("train_config")
            trained = trained if isinstance(trained, dict) else {}
            for key, want in overrides.items():
                if key not in trained or trained[key] != _plain(want):
                    raise ValueError(
                        f"{path} was trained with {key}={trained.get(key)!r}, "
                        f"not {key}={want!r}"
                    )
            return model, meta
        except ValueError as exc:
            if progress:
                print(f"tnconv: retraining, cached checkpoint not usable: {exc}")
    config = train_config(model_key, name, dev)
    config.update(overrides)
    if epochs is not None:
        config["epochs"] = epochs
    train = load_dataset(name, "train", root=root)
    test = load_dataset(name, "test", root=root)
    torch.manual_seed(seed)
    model = get_model(model_key, train.num_classes, train.in_channels)
    start = time.perf_counter()
    history = fit(model, train, device=dev, seed=seed, progress=progress, **config)
    seconds = time.perf_counter() - start
    result = evaluate(model, test, device=dev)
    meta = {
        "model": model_key,
        "dataset": name,
        "num_classes": train.num_classes,
        "in_channels": train.in_channels,
        "accuracy": result["accuracy"],
        "test_loss": result["loss"],
        "epochs": config["epochs"],
        "train_config": config,
        "seed": seed,
        "device": str(dev),
        "train_seconds": seconds,
        "history": history,
    }
    if "top5" in result:
        meta["top5"] = result["top5"]
    if cache:
        save_checkpoint(model, path, meta=meta)
    return model, meta
