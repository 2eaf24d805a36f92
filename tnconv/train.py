"""Training and evaluation of tnconv's models.

:func:`fit` trains any :class:`torch.nn.Module` classifier on an :class:`~tnconv.data.ImageDataset`
(SGD with Nesterov momentum or AdamW, one-cycle / cosine / constant schedule, label smoothing,
bf16 autocast on CUDA, channels_last); :func:`evaluate` measures top-1 (and top-5) accuracy and
loss. The optimizers and schedules are the registries :data:`OPTIMIZERS` and :data:`SCHEDULES`;
the per model / dataset / device defaults are in :data:`TRAIN_DEFAULTS` (:func:`train_config`).

Checkpoints are :mod:`tnconv.checkpoints`; a trained model from the cache or trained now is
:func:`tnconv.pretrained.train_or_load` (which uses this module and that one).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageDataset, canonical_name, loaders
from .distillation import check_teacher, distillation_loss
from .registry import Registry
from .runtime import autocast, model_device, resolve_device

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "TRAIN_DEFAULTS",
    "evaluate",
    "fit",
    "train_config",
]


class OptimizerSpec(NamedTuple):
    """One entry of :data:`OPTIMIZERS`: how to build it and its default lr / weight decay."""

    build: Callable[[list[dict[str, Any]], float], torch.optim.Optimizer]
    lr: float
    weight_decay: float


def _onecycle(opt: torch.optim.Optimizer, lr: float, total_steps: int) -> Any:
    return torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=total_steps, pct_start=0.25,
        div_factor=10.0, final_div_factor=100.0,
    )


def _cosine(opt: torch.optim.Optimizer, lr: float, total_steps: int) -> Any:
    warmup = min(max(total_steps // 20, 1), total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(total_steps - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _constant(opt: torch.optim.Optimizer, lr: float, total_steps: int) -> Any:
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)


#: Optimizers by name: SGD with Nesterov momentum 0.9 (L2 weight decay) or AdamW (decoupled).
OPTIMIZERS: Registry[OptimizerSpec] = Registry("optimizer", {
    "sgd": OptimizerSpec(lambda groups, lr: torch.optim.SGD(groups, lr=lr, momentum=0.9,
                                                            nesterov=True), 0.1, 5e-4),
    "adamw": OptimizerSpec(lambda groups, lr: torch.optim.AdamW(groups, lr=lr), 1e-3, 0.05),
})
#: Learning-rate schedules by name: ``build(optimizer, peak_lr, total_steps)``.
SCHEDULES: Registry[Callable[..., Any]] = Registry("schedule", {
    "onecycle": _onecycle, "cosine": _cosine, "constant": _constant,
})

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
    # resnet20 (He et al.'s CIFAR ResNet, 0.27 M parameters), the CPU ResNet study's model:
    # 92.70 % on Fashion-MNIST in 3 epochs (He et al.'s batch 128 and lr 0.1, one-cycle; no
    # augmentation, as 3 epochs underfit). 1035 s on 1 thread of the busy 2-core CPU
    # (benchmarks/results/resnet20-fashion-mnist-cpu.json), 335 s (92.56 %) on 2 threads of the
    # idle one (resnet20-fashion-mnist-cpu-idle.json). The deeper CIFAR ResNets take the "*" rows
    ("resnet20", "fashion-mnist", "cpu"): dict(epochs=3, batch_size=128, lr=0.1,
                                               augment=False),
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


def _iter_batches(data: Any, batch_size: int, device: torch.device
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(data, ImageDataset):
        data = data.to(device)
    # asynchronous only towards CUDA: a non-blocking copy to the host may be read unfinished
    non_blocking = device.type == "cuda"
    for x, y in loaders.batches(data, batch_size):  # any data form, checked (tnconv.data)
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
    data : ImageDataset, (images, labels) tensors, Dataset, DataLoader or iterable of batches
        The images, in any form of :mod:`tnconv.data.loaders`: an ImageDataset, a tensor pair
        or a map-style dataset of ``(image, label)`` is cut into ``batch_size`` batches; a
        DataLoader or an iterable of ``(x, y)`` batches is used as given.
    batch_size : int, default 1000
        Images per batch (not for a DataLoader or iterable of batches).
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
    _check_model(model)
    _check_batch_size(batch_size)
    dev = model_device(model) if device is None else resolve_device(device)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    correct5 = torch.zeros((), dtype=torch.int64, device=dev)
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    n = 0
    num_outputs = 0
    try:
        with torch.no_grad(), autocast(dev):
            for x, y in _iter_batches(data, batch_size, dev):
                if n == 0:
                    loaders.check_model_input(model, x)
                logits = model(x).float()
                num_outputs = logits.shape[1]
                loaders.check_sample_labels(y, num_outputs, offset=n)
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


def _num_outputs(model: nn.Module, x: torch.Tensor) -> int:
    """Number of outputs (classes) of ``model``, from one image of ``x`` in eval mode."""
    loaders.check_model_input(model, x)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return int(model(x[:1]).shape[-1])
    finally:
        model.train(was_training)


def _make_optimizer(model: nn.Module, spec: OptimizerSpec, lr: float, weight_decay: float
                    ) -> torch.optim.Optimizer:
    # no weight decay on biases and normalisation parameters
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return spec.build([{"params": decay, "weight_decay": weight_decay},
                       {"params": no_decay, "weight_decay": 0.0}], lr)


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
    teacher: nn.Module | None = None,
    distill: float | None = None,
    temperature: float | None = None,
) -> list[dict[str, float]]:
    """Train a classifier in place and return its history, one dict per epoch.

    Parameters
    ----------
    model : torch.nn.Module
        Any classifier mapping N x C x H x W images to N x num_classes logits. It is trained in
        place on ``device`` (moved there if needed, and to channels_last memory format when
        ``channels_last``); it is left in eval mode.
    train_data : ImageDataset, tensors, Dataset, DataLoader or iterable of batches
        Training images in any form of :mod:`tnconv.data.loaders`. An ImageDataset is copied
        once to ``device``, shuffled and augmented there; a tensor pair or a map-style dataset
        is shuffled and batched (no augmentation: give the dataset its own transforms); a
        DataLoader or iterable of ``(x, y)`` batches is used as given, one pass per epoch.
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
        be the only one). Not for a DataLoader or iterable of batches (their own).
    augment : bool, default True
        The dataset's training augmentation (see :meth:`ImageDataset.batches`; ImageDataset
        only).
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
    teacher : torch.nn.Module, optional
        Distillation (:mod:`tnconv.distillation`): the loss is ``distill`` times the
        temperature-softened KL divergence from the teacher's logits on the same (augmented)
        batches, plus ``1 - distill`` times the cross-entropy on the labels. The teacher runs
        in eval mode under ``no_grad`` on ``device`` (moved there); its weights and mode are
        left as they were.
    distill, temperature : float, optional
        The teacher's weight in [0, 1] (default 1.0) and the temperature > 0 (default 4.0);
        only with ``teacher``.

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
    _check_model(model)
    kd = check_teacher(teacher, distill, temperature)
    lr, weight_decay = _check_fit_options(train_data, epochs=epochs, lr=lr, optimizer=optimizer,
                                          schedule=schedule, label_smoothing=label_smoothing,
                                          weight_decay=weight_decay, batch_size=batch_size)
    dev = model_device(model) if device is None else resolve_device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device=dev, memory_format=fmt)
    gen = torch.Generator().manual_seed(seed)
    # any data form (tnconv.data.loaders); labels checked against the model's outputs
    data = loaders.train_batches(train_data, batch_size, device=dev, augment=augment,
                                 generator=gen, probe=lambda x: _num_outputs(model, x))
    eval_set = eval_data.to(dev) if isinstance(eval_data, ImageDataset) else eval_data
    steps = data.steps
    opt = _make_optimizer(model, OPTIMIZERS[optimizer], lr, weight_decay)
    sched = SCHEDULES[schedule](opt, lr, steps * epochs)
    history: list[dict[str, float]] = []

    # torch.manual_seed seeds every CUDA device too: restore all of them afterwards
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    teacher_mode = teacher.training if teacher is not None else False
    if teacher is not None:
        teacher.to(dev).eval()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            batches = data.epoch()
            bar = _progress(batches, steps, f"epoch {epoch}/{epochs}", progress)
            record = _train_epoch(model, bar, opt, sched, fmt=fmt, dev=dev, steps=steps,
                                  label_smoothing=label_smoothing, progress=progress,
                                  step_callback=step_callback, teacher=teacher, kd=kd)
            record = {"epoch": epoch, **record}
            if eval_set is not None:
                result = evaluate(model, eval_set, device=dev)
                record.update({f"eval_{k}": result[k] for k in ("accuracy", "loss", "top5")
                               if k in result})
            record["time"] = time.perf_counter() - start
            history.append(record)
            if progress:
                _print_epoch(record)
            if callback is not None:
                callback(model, epoch)
    if teacher is not None:
        teacher.train(teacher_mode)
    model.eval()
    return history



def _check_fit_options(train_data: Any, *, epochs: int, lr: float | None, optimizer: str,
                       schedule: str, label_smoothing: float, weight_decay: float | None,
                       batch_size: int) -> tuple[float, float]:
    """Validate :func:`fit`'s options; return the learning rate and weight decay to use."""
    loaders.batches(train_data, 1)  # a TypeError for a data form tnconv cannot read
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    spec = OPTIMIZERS[optimizer]
    SCHEDULES.resolve(schedule)  # the registry's error for an unknown name
    _check_batch_size(batch_size)
    lr = _real("lr", spec.lr if lr is None else lr)
    weight_decay = _real("weight_decay",
                         spec.weight_decay if weight_decay is None else weight_decay)
    if not 0.0 <= _real("label_smoothing", label_smoothing) < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0 (and finite), got {lr}")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0 (and finite), got {weight_decay}")
    return lr, weight_decay


def _real(name: str, value: Any) -> float:
    """``value`` as a finite float; a TypeError / ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def _check_batch_size(batch_size: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def _check_model(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__} "
                        f"{model!r:.60}")


def _train_epoch(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                 opt: torch.optim.Optimizer, sched: Any, *, fmt: torch.memory_format,
                 dev: torch.device, steps: int, label_smoothing: float, progress: bool,
                 step_callback: Callable[[nn.Module], None] | None,
                 teacher: nn.Module | None = None, kd: tuple[float, float] | None = None
                 ) -> dict[str, float]:
    """One pass over ``batches``: the training loss, accuracy and the final learning rate."""
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    seen = 0
    for i, (x, y) in enumerate(batches, start=1):
        x = x.contiguous(memory_format=fmt)
        with autocast(dev):
            logits = model(x)
            if teacher is None or kd is None:
                loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
            else:
                with torch.no_grad():
                    target = teacher(x)
                loss = distillation_loss(logits, target, y, distill=kd[0], temperature=kd[1],
                                         label_smoothing=label_smoothing)
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
        # every step on the CPU; every 10 on CUDA (a check waits for the device)
        if (dev.type != "cuda" or i % 10 == 0 or i == steps) and not loss_sum.isfinite():
            raise ValueError(f"training diverged: the loss became {loss.item()} by step {i} "
                             f"(lr {opt.param_groups[0]['lr']:.3g}); lower lr or check the data")
        if progress and (i % 10 == 0 or i == steps):
            batches.set_postfix(  # type: ignore[attr-defined]
                loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}",
            )
    if seen == 0:
        raise ValueError("train_data is empty")
    if not loss_sum.isfinite() or not all(p.isfinite().all() for p in model.parameters()):
        raise ValueError("training diverged: the loss or the weights became non-finite "
                         f"(lr {opt.param_groups[0]['lr']:.3g}); lower lr or check the data")
    return {"train_loss": loss_sum.item() / seen, "train_accuracy": correct.item() / seen,
            "lr": opt.param_groups[0]["lr"]}


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
