"""Image folders in torchvision's ``ImageFolder`` layout: ``root/<class>/<image>``.

:func:`load_image_folder` (also reached through :func:`tnconv.data.load_dataset` with a
folder) returns a :class:`torchvision.datasets.ImageFolder` whose transform resizes, centre-crops,
converts to a float tensor and normalises each image as it is read: nothing is held in memory,
so an ImageNet-sized validation folder streams from disk. The classes are the sub-folder names
in sorted order (label ``i`` is the ``i``-th name).

Defaults are those of torchvision's ImageNet models: shorter side resized to 256, centre crop
224 x 224, ImageNet mean and standard deviation, 3 (RGB) channels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "is_folder_spec", "load_image_folder"]

#: Per-channel mean and standard deviation of ImageNet (torchvision's pretrained models).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def is_folder_spec(name: Any) -> bool:
    """Whether ``name`` means a folder (a path object, or a string with a separator or that is
    an existing folder) rather than a dataset name.

    Examples
    --------
    >>> is_folder_spec("fashion-mnist"), is_folder_spec("./images")
    (False, True)
    """
    if isinstance(name, os.PathLike):
        return True
    return isinstance(name, str) and (os.sep in name or "/" in name or name.startswith("~")
                                      or Path(name).is_dir())


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _pick_split(root: Path, split: str | None) -> Path:
    if not root.is_dir():
        raise FileNotFoundError(f"no image folder at {root}")
    if split is not None:
        aliases = {"test": ("test", "val"), "val": ("val", "test")}.get(split, (split,))
        for name in aliases:
            if (root / name).is_dir():
                return root / name
    return root


def load_image_folder(
    root: str | os.PathLike,
    split: str | None = None,
    *,
    resize: int | None = 256,
    crop: int | None = 224,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
    channels: int = 3,
) -> Any:
    """An ``ImageFolder`` dataset that yields normalised ``C x H x W`` float tensors.

    Parameters
    ----------
    root : path
        ``root/<class>/<image>``, or ``root/<split>/<class>/<image>`` (see ``split``).
    split : str, optional
        Use ``root/<split>`` when it exists (``"test"`` also finds ``val`` and the reverse);
        otherwise ``root`` itself.
    resize : int or None, default 256
        Resize the shorter side to this many pixels (bilinear, antialiased); ``None``: keep.
    crop : int or None, default 224
        Centre crop to ``crop x crop``; ``None``: no crop (the images must then share a size).
    mean, std : sequence of float or None, default ImageNet's
        Per-channel normalisation after scaling the pixels to [0, 1]; ``None``: none.
    channels : {1, 3}, default 3
        Grayscale (1) or RGB (3) images.

    Returns
    -------
    torchvision.datasets.ImageFolder
        ``classes``, ``class_to_idx`` and ``samples`` as in torchvision.

    Raises
    ------
    FileNotFoundError
        No such folder.
    ValueError
        No class sub-folders, no image in them, or bad options.

    Examples
    --------
    >>> ds = load_image_folder("val/", resize=None, crop=None)  # doctest: +SKIP
    >>> ds[0][0].shape, ds.classes[:2]  # doctest: +SKIP
    (torch.Size([3, 32, 32]), ['cat', 'dog'])
    """
    from torchvision import datasets, transforms

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    for label, value in (("resize", resize), ("crop", crop)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"{label} must be a positive int or None, got {value!r}")
    folder = _pick_split(Path(root).expanduser(), split)
    if not _class_dirs(folder):
        raise ValueError(f"image folder {folder} is empty: it needs one sub-folder per class "
                         f"holding the images ({folder}/<class>/<image>.png)")
    steps: list[Any] = []
    if channels == 1:
        steps.append(transforms.Grayscale(1))
    if resize is not None:
        steps.append(transforms.Resize(resize, antialias=True))
    if crop is not None:
        steps.append(transforms.CenterCrop(crop))
    steps.append(transforms.ToTensor())
    if mean is not None or std is not None:
        m = tuple(mean) if mean is not None else (0.0,) * channels
        s = tuple(std) if std is not None else (1.0,) * channels
        if len(m) != channels or len(s) != channels:
            raise ValueError(f"mean and std need {channels} values (one per channel), got "
                             f"{m} and {s}")
        steps.append(transforms.Normalize(m, s))
    try:
        return datasets.ImageFolder(str(folder), transform=transforms.Compose(steps))
    except FileNotFoundError as exc:  # class folders without a single image
        raise ValueError(f"image folder {folder} holds no images: {exc}") from exc
