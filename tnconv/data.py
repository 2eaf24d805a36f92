"""Datasets for the study: CIFAR-10/100, Fashion-MNIST and MNIST as device-resident tensors.

:func:`load_dataset` returns an :class:`ImageDataset`: the whole split as one normalised
float32 tensor ``images`` (N x C x H x W) and one int64 tensor ``labels``. Batches are cut from
those tensors and augmented batched on the dataset's device (random crop with padding, plus a
horizontal flip for CIFAR), so there is no per-image Python work on the CPU and, after
``.to("cuda")``, no host-to-device traffic at all while training.

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

Shapes: every dataset gives 32 x 32 images, so one model fits all of them. Fashion-MNIST and
MNIST keep their single channel (``in_channels=1``) and are zero-padded by 2 pixels on each side
(28 -> 32, black background, before normalisation), which matches the CIFAR stem of
:func:`tnconv.models.resnet50` and gives :func:`tnconv.models.cnn4` a clean 32 -> 2 pooling chain.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "ImageDataset",
    "as_tensors",
    "canonical_name",
    "data_search_path",
    "load_dataset",
    "SYSTEM_DATA_DIR",
]

#: Base folder of Debian's dataset packages (``$TNCONV_SYSTEM_DATA`` overrides it).
SYSTEM_DATA_DIR = Path("/usr/share/datasets")


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about one dataset: shapes, normalisation and augmentation."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int  # pixels of padding for the random crop (training augmentation)
    flip: bool  # random horizontal flip (training augmentation)
    torchvision_class: str
    get_data: str  # how to get the data, for the missing-data error


_FMNIST_HINT = (
    "install Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist), "
    "put the four IDX files (train-images-idx3-ubyte.gz, ...) in one of these folders, "
    "or pass download=True (CLI: --download)"
)
_MNIST_HINT = (
    "put the four IDX files (train-images-idx3-ubyte.gz, ...) in one of these folders, "
    "or pass download=True (CLI: --download)"
)
_CIFAR_HINT = (
    "put the extracted python version ({folder}/ from {archive}) in one of these folders, "
    "or pass download=True (CLI: --download)"
)

#: Every dataset tnconv knows, by canonical name.
DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(
        "cifar10", 10, 3, 32,
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 4, True, "CIFAR10",
        _CIFAR_HINT.format(folder="cifar-10-batches-py", archive="cifar-10-python.tar.gz"),
    ),
    "cifar100": DatasetInfo(
        "cifar100", 100, 3, 32,
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 4, True, "CIFAR100",
        _CIFAR_HINT.format(folder="cifar-100-python", archive="cifar-100-python.tar.gz"),
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", 10, 1, 32, (0.2860,), (0.3530,), 2, False, "FashionMNIST",
        _FMNIST_HINT,
    ),
    "mnist": DatasetInfo(
        "mnist", 10, 1, 32, (0.1307,), (0.3081,), 2, False, "MNIST", _MNIST_HINT,
    ),
}

_ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar_10": "cifar10",
    "cifar-100": "cifar100",
    "cifar_100": "cifar100",
}
_SPLITS = ("train", "test")
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_MNIST_PAD = 2  # 28 x 28 -> 32 x 32


def canonical_name(name: str) -> str:
    """Return the canonical dataset name for ``name`` (case and aliases folded).

    Examples
    --------
    >>> canonical_name("Fashion_MNIST")
    'fashion-mnist'
    """
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a str, got {type(name).__name__}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)} "
            f"(aliases: {', '.join(sorted(_ALIASES))})"
        )
    return key


def _cache_dir() -> Path:
    env = os.environ.get("TNCONV_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tnconv"


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
    dirs.append(_cache_dir() / "data")
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

    target = _cache_dir() / "data" / info.name
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


class ImageDataset:
    """One split of an image dataset held as two tensors, with fast batching.

    Parameters
    ----------
    images : torch.Tensor
        Float32 images, N x C x H x W, already normalised.
    labels : torch.Tensor
        Int64 class labels, N.
    name : str
        Canonical dataset name (a key of :data:`DATASETS`).
    split : {"train", "test"}
        Which split the tensors come from.

    Examples
    --------
    >>> ds = ImageDataset(torch.zeros(4, 1, 32, 32), torch.arange(4), "mnist", "test")
    >>> len(ds), ds.num_classes, ds.in_channels, ds.image_size
    (4, 10, 1, 32)
    >>> [x.shape[0] for x, y in ds.batches(3)]
    [3, 1]
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, name: str, split: str):
        if images.ndim != 4 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"need images N x C x H x W and labels N, got {tuple(images.shape)} "
                f"and {tuple(labels.shape)}"
            )
        if split not in _SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(_SPLITS)}")
        self.images = images
        self.labels = labels
        self.info = DATASETS[canonical_name(name)]
        self.name = self.info.name
        self.split = split

    # -- facts ------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Number of classes of the dataset (not just those present in this subset)."""
        return self.info.num_classes

    @property
    def in_channels(self) -> int:
        """Image channels, C."""
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        """Image height (= width), H."""
        return int(self.images.shape[2])

    @property
    def device(self) -> torch.device:
        """Device holding the tensors."""
        return self.images.device

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"shape={tuple(self.images.shape[1:])}, device={str(self.device)!r})"
        )

    # -- derived datasets ---------------------------------------------------------------------
    def subset(self, n_or_indices: int | Sequence[int] | torch.Tensor, *, seed: int = 0
               ) -> ImageDataset:
        """A smaller dataset: the first ``n`` of a fixed random permutation, or given indices.

        Parameters
        ----------
        n_or_indices : int or sequence of int or torch.Tensor
            Number of images (``0 < n <= len(self)``), or explicit indices.
        seed : int, default 0
            Seed of the permutation (ignored for explicit indices).

        Returns
        -------
        ImageDataset
            Same name, split and device.

        Examples
        --------
        >>> ds = ImageDataset(torch.zeros(10, 1, 32, 32), torch.arange(10), "mnist", "test")
        >>> len(ds.subset(4)), ds.subset([1, 2]).labels.tolist()
        (4, [1, 2])
        """
        if isinstance(n_or_indices, bool):
            raise TypeError("n_or_indices must be an int or indices, got bool")
        if isinstance(n_or_indices, (int, np.integer)):
            n = int(n_or_indices)
            if not 0 < n <= len(self):
                raise ValueError(f"subset size must be in 1..{len(self)}, got {n}")
            gen = torch.Generator().manual_seed(seed)
            idx = torch.randperm(len(self), generator=gen)[:n]
        else:
            idx = torch.as_tensor(n_or_indices, dtype=torch.int64).reshape(-1)
            if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
                raise ValueError(f"subset indices must be in range for {len(self)} images")
        idx = idx.to(self.device)
        return ImageDataset(self.images[idx], self.labels[idx], self.name, self.split)

    def to(self, device: str | torch.device) -> ImageDataset:
        """The same data with its tensors on ``device`` (``self`` if already there).

        Examples
        --------
        >>> ds = ImageDataset(torch.zeros(2, 1, 32, 32), torch.arange(2), "mnist", "test")
        >>> ds.to("cpu").device.type
        'cpu'
        """
        device = torch.device(device)
        if device == self.device:
            return self
        # asynchronous only towards CUDA: a non-blocking copy to the host may be read unfinished
        non_blocking = device.type == "cuda"
        return ImageDataset(
            self.images.to(device, non_blocking=non_blocking),
            self.labels.to(device, non_blocking=non_blocking),
            self.name,
            self.split,
        )

    # -- batching -----------------------------------------------------------------------------
    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate over ``(x, y)`` batches on the dataset's device.

        Parameters
        ----------
        batch_size : int
            Images per batch (the last batch may be smaller unless ``drop_last``).
        shuffle : bool, default False
            Visit the images in a random order.
        augment : bool, default False
            Apply the dataset's training augmentation, batched on tensors: random crop with
            zero (black) padding (4 px for CIFAR, 2 px for Fashion-MNIST / MNIST) and, for
            CIFAR only, a random horizontal flip.
        generator : torch.Generator, optional
            CPU generator for the order and the augmentation (reproducible runs).
        drop_last : bool, default False
            Skip a final incomplete batch.

        Examples
        --------
        >>> ds = ImageDataset(torch.randn(5, 1, 32, 32), torch.arange(5), "mnist", "train")
        >>> g = torch.Generator().manual_seed(0)
        >>> [tuple(x.shape) for x, _ in ds.batches(4, shuffle=True, augment=True, generator=g)]
        [(4, 1, 32, 32), (1, 1, 32, 32)]
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        n = len(self)
        if shuffle:
            order = torch.randperm(n, generator=generator).to(self.device)
        else:
            order = None
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            if order is None:
                x = self.images[start:start + batch_size]
                y = self.labels[start:start + batch_size]
            else:
                idx = order[start:start + batch_size]
                x, y = self.images[idx], self.labels[idx]
            if augment:
                x = self.augment(x, generator=generator)
            yield x, y

    def num_batches(self, batch_size: int, *, drop_last: bool = False) -> int:
        """Number of batches :meth:`batches` yields for ``batch_size``."""
        n = len(self)
        return n // batch_size if drop_last else -(-n // batch_size)

    def augment(self, x: torch.Tensor, *, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        """Training augmentation of one batch ``x`` (see :meth:`batches`), on ``x``'s device.

        Examples
        --------
        >>> ds = ImageDataset(torch.zeros(2, 3, 32, 32), torch.arange(2), "cifar10", "train")
        >>> ds.augment(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 3, 32, 32])
        """
        info = self.info
        n, c, h, w = x.shape
        pad = info.crop_padding
        if pad:
            # pad with the normalised value of a black pixel, then cut one window per image
            black = torch.tensor(
                [-m / s for m, s in zip(info.mean, info.std, strict=True)],
                dtype=x.dtype, device=x.device,
            )
            if len(black) != c:
                black = black.mean().expand(c)
            padded = black.view(1, c, 1, 1).expand(n, c, h + 2 * pad, w + 2 * pad).clone()
            padded[:, :, pad:pad + h, pad:pad + w] = x
            shifts = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).to(x.device)
            rows = shifts[0][:, None] + torch.arange(h, device=x.device)  # n x h
            cols = shifts[1][:, None] + torch.arange(w, device=x.device)  # n x w
            batch = torch.arange(n, device=x.device)[:, None, None]
            # advanced indices around a slice: result is n x h x w x c
            x = padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
            x = x.contiguous()
        if info.flip:
            flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
            x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
        return x


def load_dataset(
    name: str,
    split: str,
    *,
    root: str | os.PathLike | None = None,
    download: bool = False,
) -> ImageDataset:
    """Load one split of a dataset as a normalised, CPU-resident :class:`ImageDataset`.

    Parameters
    ----------
    name : {"cifar10", "cifar100", "fashion-mnist", "mnist"}
        Dataset; "fashion_mnist" and "fashionmnist" are accepted too.
    split : {"train", "test"}
        Which split.
    root : path, optional
        Folder searched first (see the module docstring for the search order and layouts).
    download : bool, default False
        Download into the user cache (``$TNCONV_CACHE/data``) through torchvision when the data
        is found nowhere.

    Returns
    -------
    ImageDataset
        32 x 32 images; 3 channels for CIFAR, 1 for Fashion-MNIST / MNIST (padded 28 -> 32).

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
    info = DATASETS[canonical_name(name)]
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(_SPLITS)}")
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
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    images = (x.to(torch.float32).div_(255.0) - mean).div_(std)
    return ImageDataset(images, y, info.name, split)


def as_tensors(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` from an ImageDataset-like object or a pair of tensors.

    Examples
    --------
    >>> x, y = as_tensors((torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long)))
    >>> x.shape[0], y.dtype
    (2, torch.int64)
    """
    if hasattr(data, "images") and hasattr(data, "labels"):
        x, y = data.images, data.labels
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        raise TypeError("data must be an ImageDataset (with .images and .labels) or a pair "
                        f"(images, labels) of tensors, got {type(data).__name__}")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("data's images and labels must be torch tensors")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got dtype {y.dtype}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need as many labels as images (and at least one), got {len(x)} "
                         f"images and {len(y)} labels")
    return x, y
