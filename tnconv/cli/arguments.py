"""What the command line's model and data arguments name, turned into a model and a dataset.

The model argument of ``tnconv eval`` and ``tnconv sweep`` is one of

* a tnconv checkpoint (a file; :func:`tnconv.checkpoints.load_checkpoint`);
* a model name: with ``--weights`` torchvision's pretrained model
  (:func:`tnconv.models.get_model`), with ``--state-dict FILE`` the model built by name with
  those weights, else tnconv's trained model of that name (:func:`tnconv.train_or_load`);
* ``package.module:callable``: an importable factory called without arguments that returns an
  :class:`torch.nn.Module`, with ``--state-dict FILE`` to load its weights.

The data argument (``--dataset``) is one of

* a dataset name (:data:`tnconv.data.DATASETS`);
* a folder in ``ImageFolder`` layout, read by :func:`tnconv.data.load_image_folder` with the
  preprocessing options (``--resize``, ``--crop``, ``--mean``, ``--std``, ``--channels``). Their
  defaults: for a tnconv checkpoint, its dataset's (no resize or crop, its mean, std and
  channels); otherwise torchvision's ImageNet preprocessing (256, 224, ImageNet mean and std, RGB);
* ``package.module:callable`` returning a dataset, a DataLoader or an iterable of batches.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import DATASETS, canonical_name, is_folder_spec, load_dataset
from ..data.loaders import take_subset

__all__ = ["add_input_options", "check_fits", "describe_data", "load_factory",
           "load_input_data", "load_input_model", "load_state_dict_file", "add_ray_option",
           "executor_options"]


def is_factory_spec(spec: Any) -> bool:
    """Whether ``spec`` reads ``package.module:callable``.

    Examples
    --------
    >>> is_factory_spec("mypkg.nets:build"), is_factory_spec("cnn4")
    (True, False)
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or os.sep in spec:
        return False
    module, attr = spec.split(":")
    return bool(module) and bool(attr) and all(p.isidentifier() for p in module.split(".")
                                               ) and attr.isidentifier()


def load_factory(spec: str) -> Any:
    """Import ``package.module:callable``, call it without arguments and return the result.

    The current folder is searched too (as ``python -m`` does).

    Raises
    ------
    ValueError
        The module or the name cannot be imported (the message says which and why).
    TypeError
        The name is not callable.
    """
    module_name, attr = spec.split(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r} for {spec!r}: {exc}; check the name "
                         "and that its folder is on PYTHONPATH") from exc
    factory = getattr(module, attr, None)
    if factory is None:
        raise ValueError(f"module {module_name!r} has no {attr!r} (from {spec!r})")
    if not callable(factory):
        raise TypeError(f"{spec} is a {type(factory).__name__}, not a callable")
    return factory()


def load_state_dict_file(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load the state dict in ``path`` into ``model``; one clear error when it does not fit.

    A dict holding ``"state_dict"`` (tnconv checkpoints, Lightning) or ``"model"`` is
    unwrapped first.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no state dict at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise TypeError(f"{path} holds a {type(state).__name__}, not a state dict")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and hasattr(state[k], "shape") and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = [f"{len(v)} {what} (first: {v[0]})" for what, v in
                 (("missing keys", missing), ("unexpected keys", unexpected),
                  ("shape mismatches, file vs model", shapes)) if v]
        raise ValueError(f"state dict {path} does not fit {type(model).__name__}: "
                         + "; ".join(parts))
    model.load_state_dict(state)
    return model


def load_input_model(args: argparse.Namespace, spec: str, device: torch.device
                     ) -> tuple[nn.Module, dict[str, Any]]:
    """The model named by ``spec`` (module docstring) and what is known of it (``meta``)."""
    from ..checkpoints import load_checkpoint
    from ..models import MODELS, get_model
    from ..pretrained import train_or_load

    weights, state_file = getattr(args, "weights", None), getattr(args, "state_dict", None)
    path = Path(spec).expanduser()
    if is_factory_spec(spec):
        model = load_factory(spec)
        if not isinstance(model, nn.Module):
            raise TypeError(f"{spec} returned a {type(model).__name__}, not a torch.nn.Module")
        meta: dict[str, Any] = {"model": spec}
    elif path.suffix == ".pt" or path.exists():
        model, meta = load_checkpoint(path, map_location=device)
        meta = dict(meta)
    elif weights is not None or state_file is not None or spec.lower() not in MODELS:
        model = get_model(spec, getattr(args, "num_classes", None),
                          getattr(args, "in_channels", None) or 3, weights=weights)
        meta = {"model": spec}
    else:
        dataset = getattr(args, "dataset", None)
        if dataset is None or is_folder_spec(dataset) or is_factory_spec(dataset):
            raise ValueError(f"name the dataset to train or load {spec!r} on: --dataset NAME "
                             "(or give a checkpoint, --weights or --state-dict)")
        return train_or_load(spec, dataset, device=device, seed=args.seed,
                             progress=not args.no_progress, root=args.data_root,
                             download=args.download)
    if state_file is not None:
        load_state_dict_file(model, state_file)
    return model.to(device).eval(), meta


def _folder_options(args: argparse.Namespace, meta: dict[str, Any]) -> dict[str, Any]:
    known = meta.get("dataset")
    info = DATASETS[canonical_name(known)] if known in DATASETS else None
    opts: dict[str, Any] = ({"resize": None, "crop": None, "mean": info.mean, "std": info.std,
                             "channels": info.in_channels} if info is not None else {})
    for key in ("resize", "crop", "mean", "std", "channels"):
        value = getattr(args, key, None)
        if value is not None:
            opts[key] = None if value == 0 else value
    return opts


def load_input_data(args: argparse.Namespace, spec: str | None, meta: dict[str, Any], *,
                    split: str = "test", subset: int | None = None) -> Any:
    """The data named by ``spec`` (default: the checkpoint's dataset), a fixed random subset of
    ``subset`` images when given."""
    spec = spec or meta.get("dataset")
    if spec is None:
        raise ValueError(f"{meta.get('model', 'the model')} does not name its dataset; pass "
                         "--dataset NAME, FOLDER or MODULE:CALLABLE")
    if is_factory_spec(spec):
        data = load_factory(spec)
    elif is_folder_spec(spec):
        data = load_dataset(Path(spec).expanduser(), split, **_folder_options(args, meta))
        if len(data) == 0:
            raise ValueError(f"image folder {spec} holds no images")
    else:
        data = load_dataset(spec, split, root=args.data_root, download=args.download)
        check_fits(meta, data, meta.get("model"))
    if subset is None:
        return data
    if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
        raise ValueError("a subset needs a dataset with a length, not a loader or iterable")
    if not 0 < subset <= len(data):
        raise ValueError(f"subset size must be in 1..{len(data)}, got {subset}")
    return take_subset(data, subset, seed=args.seed)


def check_fits(meta: dict[str, Any], data: Any, source: object) -> None:
    """A checkpoint's input channels and classes must match a named dataset's."""
    for key in ("in_channels", "num_classes"):
        have = getattr(data, key, None)
        if key in meta and have is not None and meta[key] != have:
            raise ValueError(
                f"{source} has {key}={meta[key]} but {data.name} has {have}; "
                "evaluate it on a dataset of the same shape"
            )


def describe_data(data: Any, spec: str | None) -> str:
    """A short name for printing: the dataset's name, else the argument."""
    return str(getattr(data, "name", None) or spec)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"need comma-separated numbers, got {text!r}") from None


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """The model and data options of ``eval``, ``sweep`` and ``study`` (``--dataset`` is the
    command's)."""
    g = parser.add_argument_group("your own model and data (see tnconv.cli.arguments)")
    g.add_argument("--weights", default=None, metavar="NAME",
                   help="torchvision weights of a model name, e.g. DEFAULT or IMAGENET1K_V1 "
                        "(from the torch hub cache, or downloaded)")
    g.add_argument("--state-dict", type=Path, default=None, metavar="FILE",
                   help="load these weights into a model built by name or MODULE:CALLABLE")
    g.add_argument("--num-classes", type=int, default=None,
                   help="classes of a model built by name (default: 10, or the weights')")
    g.add_argument("--in-channels", type=int, default=None,
                   help="input channels of a model built by name (default: 3)")
    g.add_argument("--resize", type=int, default=None, metavar="N",
                   help="image folder: shorter side resized to N (0: none; default 256, or "
                        "none for a checkpoint of a known dataset)")
    g.add_argument("--crop", type=int, default=None, metavar="N",
                   help="image folder: centre crop N x N (0: none; default 224, or none)")
    g.add_argument("--mean", type=_floats, default=None, metavar="M,..",
                   help="image folder: per-channel mean (default ImageNet's, or the "
                        "checkpoint dataset's)")
    g.add_argument("--std", type=_floats, default=None, metavar="S,..",
                   help="image folder: per-channel std (default as --mean)")
    g.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="image folder: 1 (grayscale) or 3 (RGB) channels")


def is_own_input(spec: str | None) -> bool:
    """True for a model or data argument that is not a registry name: a checkpoint or folder
    path, or ``package.module:callable``."""
    return spec is not None and (is_factory_spec(spec) or Path(spec).expanduser().exists()
                                 or spec.endswith(".pt"))


def study_inputs(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """``run_study``'s ``model=``, ``train_data=``, ``test_data=`` from ``tnconv study``'s
    ``--model`` / ``--dataset`` when either names your own model or data (else ``{}``: the
    study trains or loads a registry model on a registry dataset).

    The data is a dataset name, an ImageFolder folder (with ``train/`` and ``test/`` or
    ``val/`` splits) or ``package.module:callable`` returning a dataset (used for both the
    sweeps and the retraining; pass ``--retrain-epochs 0`` to skip retraining).
    """
    defaults = {"data_root": None, "download": False, "num_classes": None, "in_channels": None}
    args = argparse.Namespace(**{**defaults, **vars(args)})
    args.seed = args.seed or 0
    if not (is_own_input(args.model) or is_own_input(args.dataset) or args.weights
            or args.state_dict):
        return {}
    if args.model is None:
        raise ValueError("--dataset names your own data: pass --model too (a checkpoint, a "
                         "model name with --weights or --state-dict, or MODULE:CALLABLE)")
    model, meta = load_input_model(args, args.model, device)
    if args.dataset is not None and not is_own_input(args.dataset):
        DATASETS.resolve(args.dataset)  # a clear error listing the valid names
    test = load_input_data(args, args.dataset, meta, split="test")
    train = None if args.retrain_epochs == 0 else load_input_data(args, args.dataset, meta,
                                                          split="train")
    return {"model": model, "train_data": train, "test_data": test}


def own_label(spec: str) -> str:
    """A short name of your own model or data for the report and the run folder's name."""
    path = Path(spec).expanduser()
    return path.stem if not is_factory_spec(spec) else spec.rsplit(":", 1)[-1]


def spectra_model(args: argparse.Namespace) -> tuple[nn.Module, str]:
    """The model of ``tnconv spectra``: a checkpoint, a factory, or a model by name (random
    init under ``--seed`` unless ``--weights`` / ``--state-dict`` give it weights)."""
    from ..models import get_model

    torch.manual_seed(args.seed)
    if is_own_input(args.source) or args.weights is not None or args.state_dict is not None:
        model, meta = load_input_model(args, args.source, torch.device("cpu"))
        weights = ("" if "accuracy" in meta or args.weights or args.state_dict
                   else f", random init, seed {args.seed}")
        return model, f"{meta.get('model', args.source)} from {args.source}{weights}"
    model = get_model(args.source, args.num_classes, args.in_channels)
    return model, f"{args.source} (random init, seed {args.seed})"


def add_ray_option(parser: argparse.ArgumentParser) -> None:
    """``--ray [ADDRESS]``: run the work as Ray tasks (:mod:`tnconv.study.distributed`)."""
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="run as Ray tasks on the cluster at ADDRESS (default: RAY_ADDRESS, "
                             "else a local Ray instance); needs pip install 'tnconv[ray]'")


def executor_options(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """``executor``, ``ray_address`` and ``device`` for :func:`tnconv.sweep` from ``--ray``
    and ``--device``: on Ray, ``--device auto`` lets the workers use the cluster's GPUs."""
    if getattr(args, "ray", None) is None:
        return {"executor": "local", "device": device}
    return {"executor": "ray", "ray_address": args.ray or None,
            "device": None if getattr(args, "device", "auto") == "auto" else device}
