"""The whole correlation-compression study as one function, shared by the example scripts.

:func:`run_study` does, for one trained model:

1. train it, or load it from the checkpoint cache (:func:`tnconv.pretrained.train_or_load`); the
   tiny CI profile instead trains a narrow model for a moment on a training subset;
2. the spectra atlas of every conv layer over all cuts (:func:`tnconv.spectra_atlas`);
3. the single-layer sweep over layers x cuts x levels (:func:`tnconv.sweep`);
4. the all-layers sweep per cut and level;
5. retraining of the most aggressively truncated all-layers model that lost accuracy, with and
   without keeping the truncation (:func:`tnconv.retrain`);
6. a run folder with CSV/JSON tables, PNG plots and a Markdown summary whose findings are
   computed from the tables (:mod:`tnconv.study.report`).

Each step is one function (``_step_model``, ``_step_atlas``, ``_step_single_sweep``,
``_step_all_sweep``, ``_step_retrain``, ``_step_report``) that reads and fills one
:class:`_Run`. The sweeps write their rows as they go, so running the same command again with the
same ``out`` folder resumes an interrupted run. A run folder belongs to one model and study
(``fingerprint.json``, :mod:`tnconv.study.runfolder`): a rerun with another model or other
settings is refused before anything is written. The profiles are in
:mod:`tnconv.study.profiles`; the command line (``tnconv study`` and the example scripts) is
:func:`tnconv.cli.study_main`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..data import loaders
from ..registry import Registry
from ..runtime import resolve_device
from .runfolder import FINGERPRINT_FILE, check_folder, folder_fingerprint

__all__ = ["StudyConfig", "TRAIN_MODES", "checkpoint_plan", "pick_retrain_target", "run_study"]

#: How a study gets its model (``StudyConfig.train``).
TRAIN_MODES: Registry[str] = Registry("train mode", {
    "cache": "tnconv.train's defaults, kept in a checkpoint keyed by those settings",
    "subset": "trained from scratch on train_subset images, no cache",
    "auto": "'subset' training kept in a checkpoint keyed by its settings",
})


@dataclasses.dataclass
class StudyConfig:
    """Everything a study run needs (one profile of an example script).

    Attributes
    ----------
    model, dataset
        A :func:`tnconv.models.get_model` name and a :func:`tnconv.data.load_dataset` name.
    profile
        Name of the profile, for the record (``"tiny"``, ``"cpu"``, ``"full"``).
    note
        A line printed and written to the summary (e.g. why a model was substituted).
    train
        ``"cache"``: train with :mod:`tnconv.train`'s defaults (``train_epochs``/``train_lr``
        replacing theirs); ``"subset"``: train from scratch on ``train_subset`` images for
        ``train_epochs`` (no cache); ``"auto"``: ``"subset"`` training, cached. Both cached
        modes keep the model in a checkpoint keyed by its training settings
        (:func:`checkpoint_plan`), never in whatever else the cache holds.
    train_epochs, train_subset, train_lr, model_kwargs
        Training settings (``None``: the defaults of :mod:`tnconv.train`).
    test_subset
        Test images used by the sweeps and retraining (``None``: the whole test split).
    layers
        Layer name patterns (``None``: every conv layer).
    cuts
        ``"all"`` or a list of cut strings.
    levels
        Kept fractions of the singular values.
    retrain_epochs, retrain_subset, retrain_lr
        Retraining of the truncated model.
    threshold
        Largest accuracy drop counted as "little loss".
    batch_size, device, threads, seed, progress
        Execution (``device="auto"``: CUDA when available; ``threads=None``: torch's default).
    out
        The run folder.
    ray
        ``None``: the sweeps run here; ``""``: as Ray tasks on ``RAY_ADDRESS`` or a local Ray
        instance; an address: on that cluster (:mod:`tnconv.study.distributed`).
    """

    model: str = "cnn4"
    dataset: str = "fashion-mnist"
    profile: str = "full"
    note: str = ""
    train: str = "cache"
    train_epochs: int | None = None
    train_subset: int | None = None
    train_lr: float | None = None
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    test_subset: int | None = None
    layers: list[str] | None = None
    cuts: str | list[str] = "all"
    levels: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.1, 0.05)
    retrain_epochs: int = 3
    retrain_subset: int | None = None
    retrain_lr: float = 0.02
    threshold: float = 0.01
    batch_size: int = 1000
    device: str = "auto"
    threads: int | None = None
    seed: int = 0
    progress: bool = True
    out: str = "runs/study"
    ray: str | None = None


def _say(msg: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(msg)


def pick_retrain_target(all_rows: Sequence[Mapping[str, Any]], *, threshold: float = 0.01
                        ) -> dict[str, Any] | None:
    """The all-layers row to retrain: the most aggressive level, and at that level the cut that
    lost the most accuracy (if any truncation lost more than ``threshold``, only those count).

    Examples
    --------
    >>> rows = [dict(cut="a", level=0.5, accuracy_drop=0.0), dict(cut="a", level=0.1,
    ...         accuracy_drop=0.2), dict(cut="b", level=0.1, accuracy_drop=0.4)]
    >>> pick_retrain_target(rows)["cut"]
    'b'
    """
    rows = [dict(r) for r in all_rows if float(r["level"]) < 1.0]
    if not rows:
        return None
    lost = [r for r in rows if r["accuracy_drop"] > threshold] or rows
    low = min(float(r["level"]) for r in lost)
    return max((r for r in lost if float(r["level"]) == low), key=lambda r: r["accuracy_drop"])



@dataclasses.dataclass
class _Run:
    """What the steps of one study run share: the config, the folder and every result so far."""

    cfg: StudyConfig
    out: Path
    device: torch.device
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    train: Any = None
    test: Any = None
    model: torch.nn.Module | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    atlas: Any = None
    single: Any = None
    all_rows: Any = None
    target: dict[str, Any] | None = None
    curves: dict[str, Any] = dataclasses.field(default_factory=dict)
    figures: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @contextlib.contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Time the ``with`` block as ``timings[step]`` (seconds)."""
        start = time.perf_counter()
        yield
        self.timings[step] = time.perf_counter() - start

    def sweep_options(self) -> dict[str, Any]:
        """The options both sweeps share."""
        cfg = self.cfg
        ray = {} if cfg.ray is None else {"executor": "ray", "ray_address": cfg.ray or None}
        return dict(layers=cfg.layers, cuts=cfg.cuts, levels=cfg.levels,
                    batch_size=cfg.batch_size, device=self.device, progress=cfg.progress, **ray)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")


def checkpoint_plan(cfg: StudyConfig, device: torch.device) -> tuple[Path, dict[str, Any]]:
    """The checkpoint a study uses and the training settings it is keyed by.

    The file is ``<model>-<dataset>-<key>.pt`` in the checkpoint cache, ``key`` a hash of the
    settings: what the study studies never depends on what else is in the cache (a
    checkpoint trained by ``tnconv train`` or ``train_or_load`` with other settings is not
    used), and a cached checkpoint is used only when its metadata matches the settings.
    """
    from ..checkpoints import default_checkpoint_path
    from ..train import train_config

    mode = TRAIN_MODES.resolve(cfg.train)
    settings: dict[str, Any] = {"model": cfg.model, "dataset": cfg.dataset, "seed": cfg.seed}
    if mode == "cache":
        settings.update(train_config(cfg.model, cfg.dataset, device))
        settings["epochs"] = cfg.train_epochs or settings.get("epochs")
    else:  # subset training, as fit's defaults with augmentation
        settings.update(epochs=cfg.train_epochs or 1, train_images=cfg.train_subset,
                        augment=True, model_kwargs=dict(cfg.model_kwargs))
    if cfg.train_lr is not None:
        settings["lr"] = cfg.train_lr
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    default = default_checkpoint_path(cfg.model, cfg.dataset)
    return default.with_name(f"{default.stem}-{key[:10]}.pt"), settings


def _model(cfg: StudyConfig, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained model of the study, through :func:`tnconv.pretrained.train_or_load`."""
    from ..pretrained import train_or_load

    mode = TRAIN_MODES.resolve(cfg.train)
    path, settings = checkpoint_plan(cfg, device)
    common = dict(device=device, progress=cfg.progress, seed=cfg.seed)
    shown = ", ".join(f"{k}={v}" for k, v in settings.items() if k not in ("model", "dataset"))
    if mode == "cache" and cfg.model_kwargs:
        raise ValueError("model_kwargs need train='subset' or 'auto' (train='cache' trains the "
                         "default models only)")
    if mode == "subset":
        _say(f"model: {cfg.model} trained now on {cfg.train_subset or 'all'} training images "
             f"({shown}; not cached)")
    else:
        _say(f"model: checkpoint {path} ({'found' if path.is_file() else 'trained now'}; "
             f"keyed by {shown})")
    if mode == "cache":
        opts = {k: v for k, v in settings.items()
                if k not in ("model", "dataset", "seed", "epochs")}
        return train_or_load(cfg.model, cfg.dataset, epochs=settings["epochs"], path=path,
                             **common, **opts)
    # augment=True: the subset profiles train as they always have (fit's defaults)
    opts = {} if cfg.train_lr is None else {"lr": cfg.train_lr}
    return train_or_load(cfg.model, cfg.dataset, epochs=settings["epochs"], path=path,
                         cache=mode == "auto", train_subset=cfg.train_subset,
                         test_subset=cfg.test_subset, model_kwargs=cfg.model_kwargs,
                         augment=True, **common, **opts)


def _step_model(run: _Run) -> None:
    """1. The data and the trained model (the caller's, when ``run_study`` was given them)."""
    from ..data import load_dataset

    cfg = run.cfg
    with run.timed("model"):
        if run.test is None:
            run.train = load_dataset(cfg.dataset, "train")
            run.test = load_dataset(cfg.dataset, "test")
        if cfg.test_subset:
            run.test = loaders.take_subset(run.test, cfg.test_subset, seed=cfg.seed)
        if run.model is None:
            model, meta = _model(cfg, run.device)
            run.model, run.meta = model, dict(meta)
        else:
            run.meta = {"model": cfg.model, "given": type(run.model).__name__}
        # contiguous weights: a model just trained by fit is channels_last, one loaded from its
        # checkpoint is not, and the two formats round convolutions differently (a freshly
        # trained and a cached model gave different accuracies); the study uses one format
        run.model = run.model.to(run.device, memory_format=torch.contiguous_format).eval()
    _say(f"1. model ready ({run.timings['model']:.0f} s; test accuracy when trained: "
         f"{run.meta.get('accuracy', float('nan')):.4f})")


def _step_atlas(run: _Run) -> None:
    """2. The spectra atlas of every conv layer over all cuts."""
    from ..atlas import spectra_atlas

    with run.timed("atlas"):
        run.atlas = spectra_atlas(run.model, "all")
        run.atlas.to_csv(run.out / "atlas.csv")
    _say(f"2. spectra atlas: {len(run.atlas)} (layer, cut) rows ({run.timings['atlas']:.1f} s)")


def _step_single_sweep(run: _Run) -> None:
    """3. Each selected layer alone, over cuts and levels (resumable)."""
    from .sweep import sweep

    with run.timed("sweep_single"):
        run.single = sweep(run.model, run.test, mode="single", out=run.out / "sweep_single.csv",
                           **run.sweep_options())
    info = run.single.info
    _say(f"3. single-layer sweep: {len(run.single)} rows, {info['evaluations']} evaluations "
         f"({info['eval_mode']} mode, {run.timings['sweep_single']:.0f} s)")


def _step_all_sweep(run: _Run) -> None:
    """4. All selected layers at once, per cut and level (resumable)."""
    from .sweep import sweep

    with run.timed("sweep_all"):
        run.all_rows = sweep(run.model, run.test, mode="all", out=run.out / "sweep_all.csv",
                             **run.sweep_options())
    _say(f"4. all-layers sweep: {len(run.all_rows)} rows ({run.timings['sweep_all']:.0f} s)")


def _step_retrain(run: _Run) -> None:
    """5. Retrain the most aggressive all-layers truncation that lost accuracy, twice."""
    from ..records import Records
    from .model_truncation import truncate_model
    from .retrain import retrain

    cfg = run.cfg
    with run.timed("retrain"):
        run.target = target = pick_retrain_target(run.all_rows, threshold=cfg.threshold)
        if target is None or cfg.retrain_epochs <= 0:
            return
        small, trunc = truncate_model(run.model, cut=target["cut"], keep=float(target["level"]),
                                      layers=cfg.layers)
        trunc.to_csv(run.out / "truncation.csv")
        rtrain = (loaders.take_subset(run.train, cfg.retrain_subset, seed=cfg.seed + 1)
                  if cfg.retrain_subset else run.train)
        _say(f"5. retraining all layers truncated along {target['cut']} at keep "
             f"{target['level']} (accuracy {target['accuracy']:.4f}) on "
             f"{loaders.data_length(rtrain) or 'all the'} images")
        for key, keep in (("plain", False), ("kept", True)):
            _, run.curves[key] = retrain(small, rtrain, epochs=cfg.retrain_epochs,
                                         keep_truncation=keep, eval_data=run.test,
                                         lr=cfg.retrain_lr, device=run.device, seed=cfg.seed,
                                         progress=cfg.progress)
        rows = Records([{**r, "curve": k, "cut": target["cut"], "level": target["level"]}
                        for k, c in run.curves.items() for r in c])
        rows.to_csv(run.out / "recovery.csv")


def _figures(run: _Run, f: dict[str, Any], safe: Any) -> list[tuple[str, str]]:
    """The PNG plots of the run folder, as ``(caption, path)``."""
    from . import plots

    out, thr = run.out, run.cfg.threshold
    figs = [("Entropy per layer and cut", plots.plot_entropy(run.atlas, out / "entropy.png")),
            ("Accuracy against norm loss per cut",
             plots.plot_accuracy_vs_norm_loss(run.single, out / "accuracy_vs_norm_loss.png",
                                              all_layers=run.all_rows)),
            ("Compressibility against depth",
             plots.plot_depth(safe, out / "compressibility_vs_depth.png", threshold=thr)),
            ("All layers truncated at once",
             plots.plot_all_layers(run.all_rows, out / "all_layers.png"))]
    if run.curves:
        labels = {"plain": "retrained", "kept": "retrained, truncation kept"}
        t = run.target or {}
        rank = (f"rank {t['rank']} of {t['full_rank']} in all"
                if t.get("rank") is not None else None)
        figs.append(("Recovery curve", plots.plot_recovery(
            {labels[k]: c for k, c in run.curves.items()}, out / "recovery.png",
            baseline=f["baseline_accuracy"], cut=t.get("cut"), level=t.get("level"),
            rank=rank)))
    return figs


def _setup_lines(run: _Run) -> list[str]:
    """The summary's "Setup" bullets: model, data, sweeps, timings, device."""
    from ..model_layers import conv_layers

    cfg, single, t = run.cfg, run.single, run.timings
    n_params = sum(p.numel() for p in run.model.parameters())
    n_conv = sum(1 for _ in conv_layers(run.model))
    n_test = single[0]["n"] if single else loaders.data_length(run.test)
    return [
        f"Model `{cfg.model}` ({n_params / 1e6:.2f} M parameters, {n_conv} conv layers), "
        f"dataset `{cfg.dataset}`, {n_test} test images; profile `{cfg.profile}`."
        + (f" {cfg.note}" if cfg.note else ""),
        f"Single-layer sweep: {len(single)} rows ({len(set(r['layer'] for r in single))} layers "
        f"x {len(set(r['cut'] for r in single))} cuts x {len(cfg.levels)} levels "
        f"{list(cfg.levels)} kept fractions), {single.info['evaluations']} evaluations "
        f"({single.info['eval_mode']} evaluation), {t['sweep_single']:.0f} s.",
        f"All-layers sweep: {len(run.all_rows)} rows, {t['sweep_all']:.0f} s; retraining: "
        f"{cfg.retrain_epochs} epoch(s), {t['retrain']:.0f} s; whole run {t['total']:.0f} s.",
        f"Device {run.device} ({_device_name(run.device)}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads.",
    ]


def _step_report(run: _Run, started: float) -> dict[str, Any]:
    """6. Findings, tables, plots, ``summary.md`` and ``run.json``; returns the findings."""
    from . import report

    cfg, out = run.cfg, run.out
    with run.timed("report"):
        f = report.findings(single=run.single, all_layers=run.all_rows, atlas=run.atlas,
                            recovery={**run.curves, "target": run.target} if run.curves
                            else None, threshold=cfg.threshold)
        _write_json(out / "findings.json", f)
        safe = report.safe_table(run.single, threshold=cfg.threshold)
        safe.to_csv(out / "safe_levels.csv", index=False)
        run.figures = _figures(run, f, safe)
    run.timings["total"] = time.perf_counter() - started
    md = report.summary_markdown(f, title=f"Correlation compression of {cfg.model} on "
                                 f"{cfg.dataset}", setup=_setup_lines(run),
                                 plots=[(c, os.path.basename(p)) for c, p in run.figures])
    (out / "summary.md").write_text(md)
    _write_json(out / "run.json", {
        "timings": run.timings, "device": str(run.device),
        "device_name": _device_name(run.device), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "python": platform.python_version(),
        "model_meta": run.meta, "sweep_single": run.single.info,
        "sweep_all": run.all_rows.info,
    })
    _say(f"6. wrote {out / 'summary.md'} and {len(run.figures)} plots "
         f"({run.timings['total']:.0f} s in all)")
    return f


def run_study(cfg: StudyConfig, *, model: torch.nn.Module | None = None,
              train_data: Any = None, test_data: Any = None) -> dict[str, Any]:
    """Run the study described by ``cfg`` and write its run folder (module docstring).

    Parameters
    ----------
    cfg
        The study (usually a profile of :mod:`tnconv.study.profiles` with options applied).
    model, train_data, test_data
        Your own trained model and its data, in any form :func:`tnconv.evaluate` takes
        (ImageDataset, tensors, a torch Dataset such as ``ImageFolder``, a DataLoader). With
        ``model``, ``test_data`` is needed, and ``train_data`` too when the profile retrains;
        ``cfg.model`` and ``cfg.dataset`` then only name them in the report. Without ``model``
        the study trains or loads ``cfg.model`` on ``cfg.dataset``.

    Returns
    -------
    dict
        ``out`` (the folder), ``findings`` (see :func:`tnconv.study.report.findings`),
        ``files`` (what was written) and ``timings`` (seconds per step).

    Examples
    --------
    >>> from tnconv.study.profiles import PROFILE_SETS
    >>> cfg = PROFILE_SETS["cnn4"].profiles["tiny"]
    >>> res = run_study(dataclasses.replace(cfg, out="/tmp/tiny"))  # doctest: +SKIP
    >>> sorted(res["files"])[:2]  # doctest: +SKIP
    ['accuracy_vs_norm_loss.png', 'all_layers.png']
    """
    started = time.perf_counter()
    _check_given(cfg, model, train_data, test_data)
    run = _Run(cfg=cfg, out=Path(cfg.out), device=resolve_device(cfg.device), model=model,
               train=train_data, test=test_data)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.note:
        _say(f"note: {cfg.note}")
    _say(f"[{cfg.profile} profile] {cfg.model} on {cfg.dataset}, device {run.device}; "
         f"run folder {run.out}")
    check_folder(run.out, folder_fingerprint(cfg))  # before training: a wrong folder fails fast
    _step_model(run)
    fingerprint = folder_fingerprint(cfg, run.model)
    check_folder(run.out, fingerprint)  # before anything is written
    run.out.mkdir(parents=True, exist_ok=True)
    _write_json(run.out / FINGERPRINT_FILE, fingerprint)
    _write_json(run.out / "config.json", dataclasses.asdict(cfg))
    for step in (_step_atlas, _step_single_sweep, _step_all_sweep, _step_retrain):
        step(run)
    f = _step_report(run, started)
    return {"out": str(run.out), "findings": f, "timings": run.timings,
            "files": sorted(p.name for p in run.out.iterdir())}


def _check_given(cfg: StudyConfig, model: Any, train_data: Any, test_data: Any) -> None:
    if model is None:
        if train_data is not None or test_data is not None:
            raise ValueError("train_data/test_data need the model trained for them: pass model=")
        return
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if test_data is None:
        raise ValueError("with model=, pass test_data= (the data the study evaluates on)")
    if train_data is None and cfg.retrain_epochs > 0:
        raise ValueError("with model= and retrain_epochs > 0, pass train_data= too (or set "
                         "retrain_epochs=0)")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()
