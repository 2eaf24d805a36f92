"""Where the datasets come from: the search path, the IDX and CIFAR readers, the download.

Where the data is looked for, in order:

1. ``root`` (the argument),
2. ``$TNCONV_DATA``,
3. the user cache, ``$TNCONV_CACHE/data`` (default ``~/.cache/tnconv/data``),
4. the system folder ``/usr/share/datasets/<name>`` (Debian's dataset packages, e.g.
   ``dataset-fashion-mnist``; the base folder can be overridden with ``$TNCONV_SYSTEM_DATA``),
5. a download into the user cache through torchvision, when ``download=True``.

In each folder ``D`` the files may sit in ``D`` itself, in ``D/<name>`` or in torchvision's
layout (``D/FashionMNIST/raw``, ``D/cifar-10-batches-py``, ...). Fashion-MNIST and MNIST are
read straight from the original IDX files (``.gz`` or not) with the same parsing as
torchvision's ``read_sn3_pascalvincent_tensor``, so Debian's flat folder needs no copying or
symlinks; CIFAR goes through ``torchvision.datasets.CIFAR10``/``CIFAR100``.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..runtime import cache_dir
from .catalog import DATASETS, SPLITS, SYSTEM_DATA_DIR, DatasetInfo, canonical_name
from .folders import is_folder_spec, load_image_folder
from .images import ImageDataset, check_labels

__all__ = ["data_search_path", "load_dataset"]

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_MNIST_PAD = 2  # 28 x 28 -> 32 x 32


def _system_dir() -> Path:
    env = os.environ.get("TNCONV_SYSTEM_DATA")
    return Path(env).expanduser() if env else SYSTEM_DATA_DIR


def data_search_path(name: str, root: str | os.PathLike | None = None) -> list[Path]:
    """The folders :func:`load_dataset` searches for dataset ``name``, in order.

    Parameters
    ----------
    name : str
        Dataset name (see :data:`DATASETS`).
    root : path, optional
        Folder given by the caller; searched first.

    Returns
    -------
    list of Path
        ``root``, ``$TNCONV_DATA``, the user cache ``<cache>/data`` and the system folder
        ``<system>/<name>``; folders not configured are left out, missing ones are kept.

    Examples
    --------
    >>> [p.name for p in data_search_path("mnist")][-1]
    'mnist'
    """
    key = canonical_name(name)
    dirs: list[Path] = []
    if root is not None:
        dirs.append(Path(root).expanduser())
    env = os.environ.get("TNCONV_DATA")
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(cache_dir("data"))
    dirs.append(_system_dir() / key)
    return dirs


def _layouts(base: Path, info: DatasetInfo) -> list[Path]:
    """Folders below ``base`` that may hold the raw files of ``info``."""
    return [
        base,
        base / info.name,
        base / info.torchvision_class / "raw",
        base / info.name / info.torchvision_class / "raw",
    ]


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _locate(info: DatasetInfo, split: str, dirs: Sequence[Path]) -> tuple[str, Path] | None:
    """Find the data: ``("idx", folder)`` or ``("cifar", root for torchvision)``."""
    for base in dirs:
        for folder in _layouts(base, info):
            if info.name in _CIFAR_FOLDERS:
                if (folder / _CIFAR_FOLDERS[info.name]).is_dir():
                    return "cifar", folder
            elif all(_find_idx(folder, stem) for stem in _IDX_FILES[split]):
                return "idx", folder
    return None


@lru_cache(maxsize=8)
def _read_idx_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"cannot read IDX file {path}: {exc}") from exc
    # IDX (SN3 Pascal Vincent) format: 2 zero bytes, type code, ndim, then big-endian dims.
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path} is truncated or corrupt: its header ends early")
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4).astype(np.int64)
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise ValueError(
            f"{path} is truncated or corrupt: expected {expected} bytes of data for shape "
            f"{tuple(dims.tolist())}, found {len(raw) - offset}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(tuple(dims.tolist()))


def _read_idx(path: Path) -> np.ndarray:
    st = path.stat()
    return _read_idx_cached(str(path.resolve()), st.st_mtime_ns, st.st_size)


def _load_idx(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    img_stem, lbl_stem = _IDX_FILES[split]
    images = _read_idx(_find_idx(folder, img_stem))  # type: ignore[arg-type]
    labels = _read_idx(_find_idx(folder, lbl_stem))  # type: ignore[arg-type]
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"IDX files in {folder} do not match: images {images.shape}, labels {labels.shape}"
        )
    x = torch.from_numpy(images.copy()).unsqueeze(1)  # N x 1 x 28 x 28, uint8
    x = torch.nn.functional.pad(x, (_MNIST_PAD,) * 4)  # zero (black) border -> 32 x 32
    return x, torch.from_numpy(labels.astype(np.int64))


def _load_cifar(info: DatasetInfo, root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision.datasets as tvd

    cls = getattr(tvd, info.torchvision_class)
    try:
        ds = cls(root=str(root), train=(split == "train"), download=False)
    except RuntimeError as exc:  # torchvision's md5 check: "Dataset not found or corrupted"
        folder = root / _CIFAR_FOLDERS[info.name]
        raise ValueError(
            f"{info.name} in {folder} is incomplete or corrupt (torchvision: {exc}); "
            f"replace it: {info.get_data}"
        ) from exc
    x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    return x, torch.as_tensor(ds.targets, dtype=torch.int64)


def _download(info: DatasetInfo) -> Path:
    import torchvision.datasets as tvd

    target = cache_dir("data") / info.name
    target.mkdir(parents=True, exist_ok=True)
    cls = getattr(tvd, info.torchvision_class)
    try:
        for train in (True, False):
            cls(root=str(target), train=train, download=True)
    except Exception as exc:  # network errors come in many types
        raise FileNotFoundError(
            f"could not download {info.name} into {target}: {exc}. {info.get_data}"
        ) from exc
    return target


def load_dataset(
    name: str | os.PathLike,
    split: str | None = None,
    *,
    root: str | os.PathLike | None = None,
    download: bool = False,
    **folder_options: Any,
) -> Any:
    """Load one split of a dataset as a normalised, CPU-resident :class:`ImageDataset`, or an
    image folder as a streaming ``ImageFolder``.

    Parameters
    ----------
    name : {"cifar10", "cifar100", "fashion-mnist", "mnist"} or path
        Dataset; "fashion_mnist" and "fashionmnist" are accepted too. A folder (a path object,
        or a string with a ``/``, or an existing folder) in ``ImageFolder`` layout
        (``name/<class>/<image>``, or ``name/<split>/<class>/<image>``) is read by
        :func:`tnconv.data.folders.load_image_folder`.
    split : {"train", "test"}
        Which split (required for a named dataset; for a folder, the sub-folder used when it
        exists).
    root : path, optional
        Folder searched first (see the module docstring for the search order and layouts).
    download : bool, default False
        Download into the user cache (``$TNCONV_CACHE/data``) through torchvision when the data
        is found nowhere.
    **folder_options
        For a folder only: ``resize`` (default 256, the shorter side), ``crop`` (default 224,
        centre crop), ``mean`` and ``std`` (default ImageNet's), ``channels`` (default 3); see
        :func:`tnconv.data.folders.load_image_folder`.

    Returns
    -------
    ImageDataset or torchvision.datasets.ImageFolder
        32 x 32 images; 3 channels for CIFAR, 1 for Fashion-MNIST / MNIST (padded 28 -> 32).
        A folder gives an ``ImageFolder`` whose images are read from disk as they are used.

    Raises
    ------
    ValueError
        Unknown name or split, or unreadable files.
    FileNotFoundError
        The data is nowhere to be found (the message lists the folders searched and how to
        get the data).

    Examples
    --------
    >>> test = load_dataset("fashion-mnist", "test")  # doctest: +SKIP
    >>> test.images.shape, test.num_classes  # doctest: +SKIP
    (torch.Size([10000, 1, 32, 32]), 10)
    """
    if is_folder_spec(name):
        return load_image_folder(name, split, **folder_options)
    if folder_options:
        raise TypeError(f"{', '.join(folder_options)}: options of image folders only, not of "
                        f"the named dataset {name!r}")
    info = DATASETS[canonical_name(name)]  # type: ignore[arg-type]
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    dirs = data_search_path(info.name, root)
    found = _locate(info, split, dirs)
    if found is None and download:
        found = _locate(info, split, [_download(info)])
    if found is None:
        looked = "; ".join(str(d) for d in dirs)
        raise FileNotFoundError(
            f"{info.name} ({split}) not found; looked in: {looked}. To get it: {info.get_data}"
        )
    kind, folder = found
    x, y = _load_idx(folder, split) if kind == "idx" else _load_cifar(info, folder, split)
    check_labels(y, info.num_classes, name=f"labels of {info.name} ({split}) in {folder}")
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    images = (x.to(torch.float32).div_(255.0) - mean).div_(std)
    return ImageDataset(images, y, info.name, split)

