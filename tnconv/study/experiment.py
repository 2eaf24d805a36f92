"""The whole correlation-compression study as one function, shared by the example scripts.

:func:`run_study` does, for one trained model:

1. train it, or load it from the checkpoint cache (:func:`tnconv.train.train_or_load`); the
   tiny CI profile instead trains a narrow model for a moment on a training subset;
2. the spectra atlas of every conv layer over all cuts (:func:`tnconv.spectra_atlas`);
3. the single-layer sweep over layers x cuts x levels (:func:`tnconv.sweep`);
4. the all-layers sweep per cut and level;
5. retraining of the most aggressively truncated all-layers model that lost accuracy, with and
   without keeping the truncation (:func:`tnconv.retrain`);
6. a run folder with CSV/JSON tables, PNG plots and a Markdown summary whose findings are
   computed from the tables (:mod:`tnconv.study.report`).

The sweeps write their rows as they go, so running the same command again with the same
``out`` folder resumes an interrupted run. :func:`build_parser` and :func:`config_from_args`
give the example scripts one command-line interface.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["StudyConfig", "run_study", "build_parser", "config_from_args", "pick_retrain_target"]


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
        ``"cache"``: :func:`tnconv.train.train_or_load` (checkpoint cache); ``"subset"``:
        train from scratch on ``train_subset`` images for ``train_epochs`` (no cache);
        ``"auto"``: the cached checkpoint of ``train_or_load`` when there is one, else
        ``"subset"`` training kept in a checkpoint of its own next to it.
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


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _model(cfg: StudyConfig, device: torch.device, train: Any, test: Any
           ) -> tuple[torch.nn.Module, dict[str, Any]]:
    from ..models import get_model
    from ..train import (
        default_checkpoint_path,
        evaluate,
        fit,
        load_checkpoint,
        save_checkpoint,
        train_or_load,
    )

    if cfg.train not in ("cache", "subset", "auto"):
        raise ValueError(f"unknown train mode {cfg.train!r}; valid: cache, subset, auto")
    default_path = default_checkpoint_path(cfg.model, cfg.dataset)
    if cfg.train == "cache" or (cfg.train == "auto" and default_path.is_file()):
        if cfg.model_kwargs:
            raise ValueError("model_kwargs need train='subset' (the checkpoint cache holds the "
                             "default models only)")
        opts = {} if cfg.train_lr is None else {"lr": cfg.train_lr}
        epochs = cfg.train_epochs if cfg.train == "cache" else None
        how = (f"cached checkpoint {default_path}" if default_path.is_file()
               else "training with the defaults of tnconv.train")
        _say(f"model: train_or_load({cfg.model!r}, {cfg.dataset!r}) ({how})")
        model, meta = train_or_load(cfg.model, cfg.dataset, epochs=epochs, device=device,
                                    progress=cfg.progress, seed=cfg.seed, **opts)
        return model.to(device).eval(), dict(meta)
    # train on a subset; "auto" keeps the result in a checkpoint of its own (never the default
    # cache entry, which holds fully trained models)
    n = cfg.train_subset or len(train)
    epochs = cfg.train_epochs or 1
    spec = {"model": cfg.model, "dataset": cfg.dataset, "train_images": n, "epochs": epochs,
            "model_kwargs": {k: list(v) if isinstance(v, tuple) else v
                             for k, v in cfg.model_kwargs.items()},
            "lr": cfg.train_lr, "seed": cfg.seed}
    path = default_path.with_name(f"{default_path.stem}-{n}img-{epochs}ep.pt")
    if cfg.train == "auto" and path.is_file():
        try:
            model, meta = load_checkpoint(path, expect=spec, map_location=device)
            _say(f"model: loaded {path}")
            return model.to(device).eval(), dict(meta)
        except ValueError as exc:
            _say(f"model: retraining, {path} not usable: {exc}")
    _say(f"model: training {cfg.model} from scratch on {n} training images for {epochs} "
         f"epoch(s)" + (f", cached as {path}" if cfg.train == "auto" else ""))
    torch.manual_seed(cfg.seed)
    model = get_model(cfg.model, train.num_classes, train.in_channels, **cfg.model_kwargs)
    data = train.subset(n, seed=cfg.seed) if n < len(train) else train
    opts = {} if cfg.train_lr is None else {"lr": cfg.train_lr}
    fit(model, data, epochs=epochs, device=device, seed=cfg.seed, progress=cfg.progress, **opts)
    meta = {**spec, "accuracy": evaluate(model, test)["accuracy"]}
    if cfg.train == "auto":
        save_checkpoint(model, path, meta=meta)
    return model.eval(), meta


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")


def run_study(cfg: StudyConfig) -> dict[str, Any]:
    """Run the study described by ``cfg`` and write its run folder (module docstring).

    Returns
    -------
    dict
        ``out`` (the folder), ``findings`` (see :func:`tnconv.study.report.findings`),
        ``files`` (what was written) and ``timings`` (seconds per step).

    Examples
    --------
    >>> res = run_study(StudyConfig(profile="tiny", train="subset", ...))  # doctest: +SKIP
    >>> sorted(res["files"])[:2]  # doctest: +SKIP
    ['accuracy_vs_norm_loss.png', 'all_layers.png']
    """
    from ..atlas import Records, spectra_atlas
    from ..data import load_dataset
    from . import plots, report
    from .retrain import retrain
    from .sweep import sweep
    from .truncation import truncate_model

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = _device(cfg.device)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    _write_json(out / "config.json", dataclasses.asdict(cfg))
    if cfg.note:
        _say(f"note: {cfg.note}")
    _say(f"[{cfg.profile} profile] {cfg.model} on {cfg.dataset}, device {device}; "
         f"run folder {out}")

    # 1. data and model --------------------------------------------------------------------
    t = time.perf_counter()
    train = load_dataset(cfg.dataset, "train")
    test = load_dataset(cfg.dataset, "test")
    if cfg.test_subset:
        test = test.subset(cfg.test_subset, seed=cfg.seed)
    model, meta = _model(cfg, device, train, test)
    timings["model"] = time.perf_counter() - t
    _say(f"1. model ready ({timings['model']:.0f} s; test accuracy when trained: "
         f"{meta.get('accuracy', float('nan')):.4f})")

    # 2. spectra atlas -----------------------------------------------------------------------
    t = time.perf_counter()
    atlas = spectra_atlas(model, "all")
    atlas.to_csv(out / "atlas.csv")
    timings["atlas"] = time.perf_counter() - t
    _say(f"2. spectra atlas: {len(atlas)} (layer, cut) rows ({timings['atlas']:.1f} s)")

    # 3 and 4. sweeps --------------------------------------------------------------------------
    common = dict(layers=cfg.layers, cuts=cfg.cuts, levels=cfg.levels,
                  batch_size=cfg.batch_size, device=device, progress=cfg.progress)
    t = time.perf_counter()
    single = sweep(model, test, mode="single", out=out / "sweep_single.csv", **common)
    timings["sweep_single"] = time.perf_counter() - t
    _say(f"3. single-layer sweep: {len(single)} rows, {single.info['evaluations']} evaluations "
         f"({single.info['eval_mode']} mode, {timings['sweep_single']:.0f} s)")
    t = time.perf_counter()
    all_rows = sweep(model, test, mode="all", out=out / "sweep_all.csv", **common)
    timings["sweep_all"] = time.perf_counter() - t
    _say(f"4. all-layers sweep: {len(all_rows)} rows ({timings['sweep_all']:.0f} s)")

    # 5. retraining ------------------------------------------------------------------------------
    t = time.perf_counter()
    target = pick_retrain_target(all_rows, threshold=cfg.threshold)
    curves: dict[str, Records] = {}
    if target is not None and cfg.retrain_epochs > 0:
        small, trunc = truncate_model(model, cut=target["cut"], keep=float(target["level"]),
                                      layers=cfg.layers)
        trunc.to_csv(out / "truncation.csv")
        rtrain = train.subset(cfg.retrain_subset, seed=cfg.seed + 1) if cfg.retrain_subset \
            else train
        _say(f"5. retraining all layers truncated along {target['cut']} at keep "
             f"{target['level']} (accuracy {target['accuracy']:.4f}) on {len(rtrain)} images")
        for key, keep in (("plain", False), ("kept", True)):
            _, curve = retrain(small, rtrain, epochs=cfg.retrain_epochs, keep_truncation=keep,
                               eval_data=test, lr=cfg.retrain_lr, device=device,
                               seed=cfg.seed, progress=cfg.progress)
            curves[key] = curve
        rec_rows = Records([{**r, "curve": k, "cut": target["cut"], "level": target["level"]}
                            for k, c in curves.items() for r in c])
        rec_rows.to_csv(out / "recovery.csv")
    timings["retrain"] = time.perf_counter() - t

    # 6. findings, plots, summary ---------------------------------------------------------------
    t = time.perf_counter()
    f = report.findings(single=single, all_layers=all_rows, atlas=atlas,
                        recovery={**curves, "target": target} if curves else None,
                        threshold=cfg.threshold)
    _write_json(out / "findings.json", f)
    safe = report.safe_table(single, threshold=cfg.threshold)
    safe.to_csv(out / "safe_levels.csv", index=False)
    figs = [("Entropy per layer and cut", plots.plot_entropy(atlas, out / "entropy.png")),
            ("Accuracy against norm loss per cut",
             plots.plot_accuracy_vs_norm_loss(single, out / "accuracy_vs_norm_loss.png",
                                              all_layers=all_rows)),
            ("Compressibility against depth",
             plots.plot_depth(safe, out / "compressibility_vs_depth.png",
                              threshold=cfg.threshold)),
            ("All layers truncated at once", plots.plot_all_layers(all_rows,
                                                                  out / "all_layers.png"))]
    if curves:
        labels = {"plain": "retrained", "kept": "retrained, truncation kept"}
        figs.append(("Recovery curve", plots.plot_recovery(
            {labels[k]: c for k, c in curves.items()}, out / "recovery.png",
            baseline=f["baseline_accuracy"])))
    timings["report"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_all
    n_params = sum(p.numel() for p in model.parameters())
    setup = [
        f"Model `{cfg.model}` ({n_params / 1e6:.2f} M parameters, "
        f"{sum(1 for _ in _conv_names(model))} conv layers), dataset `{cfg.dataset}`, "
        f"{len(test)} test images; profile `{cfg.profile}`." + (f" {cfg.note}" if cfg.note else ""),
        f"Single-layer sweep: {len(single)} rows ({len(set(r['layer'] for r in single))} layers "
        f"x {len(set(r['cut'] for r in single))} cuts x {len(cfg.levels)} levels "
        f"{list(cfg.levels)} kept fractions), {single.info['evaluations']} evaluations "
        f"({single.info['eval_mode']} evaluation), {timings['sweep_single']:.0f} s.",
        f"All-layers sweep: {len(all_rows)} rows, {timings['sweep_all']:.0f} s; retraining: "
        f"{cfg.retrain_epochs} epoch(s), {timings['retrain']:.0f} s; whole run "
        f"{timings['total']:.0f} s.",
        f"Device {device} ({_device_name(device)}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads.",
    ]
    md = report.summary_markdown(f, title=f"Correlation compression of {cfg.model} on "
                                 f"{cfg.dataset}", setup=setup,
                                 plots=[(c, os.path.basename(p)) for c, p in figs])
    (out / "summary.md").write_text(md)
    _write_json(out / "run.json", {
        "timings": timings, "device": str(device), "device_name": _device_name(device),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "python": platform.python_version(), "model_meta": meta,
        "sweep_single": single.info, "sweep_all": all_rows.info,
    })
    _say(f"6. wrote {out / 'summary.md'} and {len(figs)} plots ({timings['total']:.0f} s in all)")
    return {"out": str(out), "findings": f, "timings": timings,
            "files": sorted(p.name for p in out.iterdir())}


def _conv_names(model: torch.nn.Module) -> Any:
    from ..atlas import conv_layers

    return (n for n, _ in conv_layers(model))


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


# -- command line shared by the examples -----------------------------------------------------

def _floats(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}"
                                         ) from exc
    if not vals or any(not 0 < v <= 1 for v in vals):
        raise argparse.ArgumentTypeError(f"levels must be fractions in (0, 1], got {text!r}")
    return vals


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def build_parser(description: str, profiles: Mapping[str, StudyConfig]) -> argparse.ArgumentParser:
    """The command-line interface of the study examples (every option documented)."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="profiles (--full / --quick / --tiny):\n" + "\n".join(
                                    f"  {'quick' if k == 'cpu' else k} (model {v.model}): "
                                    f"{v.note or 'everything, as described above'}"
                                    for k, v in profiles.items()))
    g = p.add_mutually_exclusive_group()
    g.add_argument("--full", action="store_true",
                   help="run everything (all conv layers, all 7 cuts, 6 levels, the whole test "
                        "set, longer retraining); the default on a GPU")
    g.add_argument("--quick", action="store_true",
                   help="the quick profile (the default without a GPU; <= 15 min on 2 cores)")
    g.add_argument("--tiny", action="store_true",
                   help="the tiny CI profile (a narrow model trained briefly; about a minute)")
    p.add_argument("--dataset", choices=["fashion-mnist", "mnist", "cifar10", "cifar100"],
                   help="dataset (default fashion-mnist; cifar10/cifar100 is the study's setting)")
    p.add_argument("--model", help="model name for tnconv.models.get_model (overrides the "
                                   "profile's)")
    p.add_argument("--out", help="run folder (default runs/<script>-<dataset>-<profile>); "
                                 "rerunning with the same folder resumes the sweeps")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--epochs", type=int, help="retraining epochs of the truncated model")
    p.add_argument("--train-epochs", type=int, help="training epochs of the model (default: "
                                                    "tnconv.train's defaults / the checkpoint)")
    p.add_argument("--levels", type=_floats,
                   help="kept fractions of the singular values, e.g. 1,0.75,0.5,0.25,0.1,0.05")
    p.add_argument("--layers", type=_names,
                   help="comma-separated layer names or fnmatch patterns, e.g. 'layer4.*'")
    p.add_argument("--cuts", type=_cut_list,
                   help="cuts separated by ';', e.g. 'out|in,kh,kw;out,kh|in,kw' "
                        "(default: all 7 bipartitions)")
    p.add_argument("--test-subset", type=int, help="number of test images (0: all)")
    p.add_argument("--batch-size", type=int, help="evaluation batch size")
    p.add_argument("--threshold", type=float,
                   help="largest accuracy drop counted as little loss (default 0.01)")
    p.add_argument("--threads", type=int,
                   help="CPU threads for torch (default: the profile's, 1 for the quick and "
                        "tiny profiles, which is faster on a busy 2-core CPU; else torch's)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _cut_list(text: str) -> list[str]:
    return [c.strip() for c in text.split(";") if c.strip()]


def config_from_args(args: argparse.Namespace, profiles: Mapping[str, StudyConfig], *,
                     script: str) -> StudyConfig:
    """The profile chosen by the flags (``--full``/``--quick``/``--tiny``, else by the device)
    with the other options applied."""
    device = args.device or "auto"
    if args.full:
        name = "full"
    elif args.tiny:
        name = "tiny"
    elif args.quick:
        name = "cpu"
    else:
        name = "full" if _device(device).type == "cuda" else "cpu"
        if name == "cpu":
            _say("no GPU: using the quick CPU profile (a test subset, fewer levels, short "
                 "retraining); pass --full to run everything")
    cfg = dataclasses.replace(profiles[name], device=device)
    overrides = {
        "dataset": args.dataset, "model": args.model, "retrain_epochs": args.epochs,
        "train_epochs": args.train_epochs, "levels": args.levels, "layers": args.layers,
        "cuts": args.cuts, "batch_size": args.batch_size, "threshold": args.threshold,
        "threads": args.threads, "seed": args.seed,
    }
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    if args.model and args.model != profiles[name].model:
        cfg = dataclasses.replace(cfg, note=f"model {args.model} chosen on the command line",
                                  model_kwargs={})
    if args.test_subset is not None:
        cfg = dataclasses.replace(cfg, test_subset=args.test_subset or None)
    if args.no_progress:
        cfg = dataclasses.replace(cfg, progress=False)
    cfg.out = args.out or os.path.join("runs", f"{script}-{cfg.dataset}-{name}")
    return cfg
