"""Where tnconv runs: the one device resolver, autocast helper and cache folder.

Every part of the package that picks a device (``device="auto"``), runs under mixed precision
or keeps files between runs (datasets, checkpoints, quimb's numba kernels) goes through these
three helpers, so the rules live in one place:

* :func:`resolve_device`: ``"auto"``/``None`` is CUDA when available, else the CPU; a CUDA
  device asked for on a machine without one is a clear ``ValueError``;
* :func:`autocast`: bf16 autocast on CUDA, nothing elsewhere (CPU autocast is slower there);
* :func:`cache_dir`: ``$TNCONV_CACHE`` or ``~/.cache/tnconv``, with one sub-folder per kind of
  file (``data``, ``checkpoints``, ``numba``);
* :func:`atomic_write`: every file that must never be seen half-written (checkpoints, rewritten
  result files, sweep fingerprints) is written to a temporary file beside it, synced and renamed
  over it.

This module imports torch only; it sits below everything else in the package.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

__all__ = ["atomic_write", "autocast", "cache_dir", "model_device", "resolve_device"]


def cache_dir(sub: str | None = None) -> Path:
    """The folder tnconv keeps files in: ``$TNCONV_CACHE`` or ``~/.cache/tnconv``.

    Parameters
    ----------
    sub
        A sub-folder (``"data"``, ``"checkpoints"``, ``"numba"``); not created here.

    Examples
    --------
    >>> cache_dir("checkpoints").name
    'checkpoints'
    """
    env = os.environ.get("TNCONV_CACHE")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "tnconv"
    return root / sub if sub else root


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Turn ``"auto"`` / None into ``cuda`` when available, else ``cpu``; check the rest.

    Raises
    ------
    ValueError
        A string torch cannot parse, or CUDA asked for where there is none.

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


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter (the CPU for a model without parameters).

    Examples
    --------
    >>> model_device(torch.nn.Linear(2, 2))
    device(type='cpu')
    """
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def autocast(device: torch.device | str, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``enabled``; a no-op context elsewhere.

    Examples
    --------
    >>> with autocast("cpu"):
    ...     torch.ones(1).dtype
    torch.float32
    """
    if enabled and torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Write a file through ``write(fh)`` so that readers see the old or the new file, never half.

    ``write`` gets a binary file opened beside ``path`` (same folder, so the rename is atomic);
    the file is flushed, synced and renamed over ``path``. On any error the temporary file is
    removed and the error raised; ``path`` is untouched.

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "x.txt"
    >>> _ = atomic_write(p, lambda fh: fh.write(b"hello"))
    >>> p.read_text()
    'hello'
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
