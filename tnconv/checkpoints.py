"""Checkpoints: save and load a model with its metadata.

:func:`save_checkpoint` writes a model's weights with its metadata (model name, sizes, dataset,
accuracy, training options) atomically and with a SHA-256; :func:`load_checkpoint` reads it back,
rebuilding the model by name and rejecting truncated, corrupt or mismatched files.
:func:`default_checkpoint_path` names the file of a trained model in the cache; the cache
itself (a model from it, or trained now) is :func:`tnconv.pretrained.train_or_load`, one tier up.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import glob
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._version import __version__
from .data import canonical_name
from .runtime import atomic_write, cache_dir, resolve_device

__all__ = [
    "CHECKPOINT_FORMAT",
    "check_writable",
    "default_checkpoint_path",
    "load_checkpoint",
    "save_checkpoint",
    "to_plain",
]

CHECKPOINT_FORMAT = "tnconv-checkpoint"
_CHECKPOINT_VERSION = 1
_REQUIRED_META = ("model", "num_classes", "in_channels")


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
    return cache_dir("checkpoints") / f"{name}-{canonical_name(dataset)}.pt"


def _infer_sizes(model: nn.Module) -> dict[str, int]:
    found: dict[str, int] = {}
    from .layers.base import FactorizedConv2d
    from .layers.mpo_linear import MPOLinear

    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, FactorizedConv2d))]
    linears = [m for m in model.modules() if isinstance(m, (nn.Linear, MPOLinear))]
    if convs:
        found["in_channels"] = convs[0].in_channels
    if linears:
        found["num_classes"] = linears[-1].out_features
    return found


def to_plain(value: Any) -> Any:
    """Metadata as plain Python types, so that ``torch.load(weights_only=True)`` reads it."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return str(value)  # torch.device, Path, TorchVersion, ...


def update_tensor_hash(h: Any, t: torch.Tensor, name: str | None = None) -> None:
    """Feed a tensor's name (when given), dtype, shape and bytes (on the CPU) to the hash ``h``.

    The one way tnconv hashes tensors: checkpoint checksums and sweep / run-folder fingerprints.

    Examples
    --------
    >>> import hashlib
    >>> h = hashlib.sha256()
    >>> update_tensor_hash(h, torch.zeros(2), "w")
    >>> h.hexdigest()[:8] == hashlib.sha256(b"w|torch.float32|(2,)|" + bytes(8)).hexdigest()[:8]
    True
    """
    t = t.detach().to("cpu").contiguous()
    prefix = "" if name is None else f"{name}|"
    h.update(f"{prefix}{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy())


def _factorized_meta(model: nn.Module) -> dict[str, Any]:
    """``{"factorized": specs}`` for a model with factorized layers (tensorized, compressed):
    how :func:`load_checkpoint` rebuilds them; ``{}`` for a dense model."""
    from .layers.convert import factorized_specs

    specs = factorized_specs(model)
    return {"factorized": specs} if specs else {}


def _checksum(meta: dict[str, Any], state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the metadata and of every tensor's name, dtype, shape and bytes (CPU)."""
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for key in sorted(state):
        update_tensor_hash(h, state[key], key)
    return h.hexdigest()


def check_writable(path: str | os.PathLike) -> Path:
    """Check that a checkpoint can be written at ``path`` (creating its folders); return it.

    Raises
    ------
    IsADirectoryError
        ``path`` is a folder.
    PermissionError, OSError
        The folder cannot be created or written to (the message names ``path``).

    Examples
    --------
    >>> check_writable("/tmp/tnconv-doctest/c.pt").name
    'c.pt'
    """
    if isinstance(path, (bytes, bytearray)) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint path {path} is a directory; name a file in it, "
                                f"e.g. {path / 'model.pt'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise type(exc)(f"cannot write the checkpoint {path}: "
                        f"{exc.strerror or exc}") from None
    return path


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
        A model with factorized layers (from :func:`tnconv.tensorize` or
        :func:`tnconv.compress`) gets ``factorized`` (:func:`tnconv.layers.factorized_specs`),
        from which :func:`load_checkpoint` rebuilds those layers with their ranks.
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
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    if not isinstance(meta.get("model"), str):
        raise ValueError(f"meta must name the model (meta['model'] = 'cnn4', ...), got {meta!r}")
    full = to_plain({**_infer_sizes(model), **meta, **_factorized_meta(model)})
    missing = [k for k in _REQUIRED_META if k not in full]
    if missing:
        raise ValueError(f"meta lacks {', '.join(missing)} and they cannot be inferred")
    full.setdefault("torch_version", str(torch.__version__))
    full.setdefault("tnconv_version", __version__)
    full.setdefault("date", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise ValueError(f"model has non-finite weights (NaN or Inf) in {', '.join(bad[:5])}; "
                         "refusing to save a diverged model")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": _CHECKPOINT_VERSION,
        "meta": full,
        "state_dict": state,
        "sha256": _checksum(full, state),
    }
    path = check_writable(path)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):  # from a crash mid-save
        with contextlib.suppress(OSError):
            stale.unlink()
    return atomic_write(path, lambda fh: torch.save(payload, fh))


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
    try:
        map_location = resolve_device(map_location)
    except ValueError as exc:
        raise ValueError(f"map_location: {exc}") from None
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
        if meta.get("factorized"):
            from .layers.convert import refactorize

            refactorize(model, meta["factorized"])
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError(f"weights in {path} do not fit the model: {first}") from exc
    model.to(map_location)
    model.eval()
    return model, meta
