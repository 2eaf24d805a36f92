"""What tnconv knows about each dataset: shapes, normalisation, augmentation, names.

:data:`DATASETS` is the registry of datasets (:class:`tnconv.registry.Registry`): its keys are
the canonical names, looked up with case and aliases folded; :func:`canonical_name` gives the
canonical spelling of any accepted name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..registry import Registry

__all__ = ["DATASETS", "DatasetInfo", "SPLITS", "SYSTEM_DATA_DIR", "canonical_name"]

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
DATASETS: Registry[DatasetInfo] = Registry("dataset", {
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
}, aliases={
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar_10": "cifar10",
    "cifar-100": "cifar100",
    "cifar_100": "cifar100",
})
#: The splits of every dataset.
SPLITS: tuple[str, ...] = ("train", "test")


def canonical_name(name: str) -> str:
    """Return the canonical dataset name for ``name`` (case and aliases folded).

    Raises
    ------
    TypeError
        ``name`` is not a str.
    ValueError
        Unknown name (the message lists the valid names and aliases).

    Examples
    --------
    >>> canonical_name("Fashion_MNIST")
    'fashion-mnist'
    """
    return DATASETS.resolve(name)
