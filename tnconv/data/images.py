"""One split of an image dataset held as two tensors, with batching and augmentation on its device.

:class:`ImageDataset` holds the whole split as one normalised float32 tensor ``images``
(N x C x H x W) and one int64 tensor ``labels``. Batches are cut from those tensors and augmented
batched on the dataset's device (random crop with padding, plus a horizontal flip for CIFAR), so
there is no per-image Python work on the CPU and, after ``.to("cuda")``, no host-to-device
traffic at all while training. :func:`as_tensors` accepts such a dataset or a tensor pair.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .catalog import DATASETS, SPLITS, canonical_name

__all__ = ["ImageDataset", "as_tensors", "check_images", "check_labels"]


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
        if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
            raise TypeError("images and labels must be torch tensors")
        if images.ndim != 4 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"need images N x C x H x W and labels N, got {tuple(images.shape)} "
                f"and {tuple(labels.shape)}"
            )
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        info = DATASETS[canonical_name(name)]
        check_labels(labels, info.num_classes)
        self.images = images
        self.labels = labels
        self.info = info
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
        if isinstance(n_or_indices, (int, np.integer)) and not isinstance(n_or_indices, bool):
            n = int(n_or_indices)
            if not 0 < n <= len(self):
                raise ValueError(f"n_or_indices: subset size must be in 1..{len(self)}, got {n}")
            gen = torch.Generator().manual_seed(seed)
            idx = torch.randperm(len(self), generator=gen)[:n]
        else:
            idx = _subset_indices(n_or_indices, len(self))
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


def _subset_indices(indices: Any, n: int) -> torch.Tensor:
    """Explicit subset indices as an int64 tensor: integers only, non-empty, in range."""
    if isinstance(indices, torch.Tensor):
        ok = not (indices.is_floating_point() or indices.is_complex()
                  or indices.dtype == torch.bool)
    elif isinstance(indices, (Sequence, np.ndarray)) and not isinstance(indices, (str, bytes)):
        ok = all(isinstance(i, (int, np.integer)) and not isinstance(i, bool)
                 for i in np.asarray(indices, dtype=object).reshape(-1))
    else:
        ok = False
    if not ok:
        raise TypeError(f"n_or_indices must be an int (a size) or integer indices, got "
                        f"{indices!r:.60}")
    idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
    if len(idx) == 0:
        raise ValueError("n_or_indices is empty: a subset needs at least one index")
    if idx.min() < -n or idx.max() >= n:
        raise ValueError(f"subset indices must be in range for {n} images")
    return idx


def check_labels(labels: torch.Tensor, num_classes: int | None = None, *,
                 name: str = "labels") -> torch.Tensor:
    """Check class labels: a 1-D integer tensor, each in ``0 .. num_classes - 1``.

    Examples
    --------
    >>> check_labels(torch.tensor([0, 2, 1]), 3).tolist()
    [0, 2, 1]
    """
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be integer class indices, got dtype {labels.dtype}")
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D class indices (N), got shape "
                         f"{tuple(labels.shape)}")
    if labels.numel() and not labels.is_meta:  # a meta tensor has no values to check
        lo, hi = int(labels.min()), int(labels.max())
        top = "" if num_classes is None else str(num_classes - 1)
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            raise ValueError(f"{name} must be in 0..{top or 'N'}, got values from {lo} to {hi}")
    return labels


def check_images(images: torch.Tensor, *, in_channels: int | None = None,
                 min_size: int = 1, name: str = "images") -> torch.Tensor:
    """Check images: a floating ``N x C x H x W`` tensor with the expected channels and size.

    Examples
    --------
    >>> check_images(torch.zeros(2, 3, 8, 8), in_channels=3).shape
    torch.Size([2, 3, 8, 8])
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor, got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"{name} must be 4-D (N x C x H x W), got shape {tuple(images.shape)}")
    c, h, w = (int(d) for d in images.shape[1:])
    if in_channels is not None and c != in_channels:
        raise ValueError(f"{name} have {c} channel{'s' * (c != 1)}, the model takes "
                         f"in_channels={in_channels}")
    if min(h, w) < min_size:
        raise ValueError(f"{name} of {h}x{w} are too small: at least {min_size}x{min_size}")
    return images


def as_tensors(data: Any, *, num_classes: int | None = None, in_channels: int | None = None,
               min_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` from an ImageDataset-like object or a pair of tensors, validated.

    The one data validation of :func:`tnconv.evaluate`, :func:`tnconv.fit` and
    :func:`tnconv.sweep`.

    Parameters
    ----------
    data
        An :class:`ImageDataset` (or anything with ``.images`` and ``.labels``) or a pair
        ``(images, labels)``: images ``N x C x H x W``, labels ``N`` integer class indices.
    num_classes
        Labels must be below it (default: the dataset's class count where ``data`` has one).
    in_channels, min_size
        The channels the model takes and the smallest height / width it accepts.

    Raises
    ------
    TypeError, ValueError
        Naming ``data``, ``images`` or ``labels`` and what is wrong.

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
    if num_classes is None:
        num_classes = getattr(data, "num_classes", None)
    check_labels(y, num_classes)
    check_images(x, in_channels=in_channels, min_size=min_size)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need as many labels as images (and at least one), got {len(x)} "
                         f"images and {len(y)} labels")
    return x, y
