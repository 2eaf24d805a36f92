"""Datasets for the study: CIFAR-10/100, Fashion-MNIST and MNIST as device-resident tensors.

:func:`load_dataset` returns an :class:`ImageDataset`: the whole split as one normalised
float32 tensor ``images`` (N x C x H x W) and one int64 tensor ``labels``, batched and augmented
on its own device. The package has five modules:

* ``catalog.py``: :data:`DATASETS` (the registry of known datasets: shapes, normalisation,
  augmentation) and :func:`canonical_name`;
* ``images.py``: :class:`ImageDataset` and :func:`as_tensors`;
* ``sources.py``: where the files are looked for (:func:`data_search_path`), the IDX / CIFAR
  readers, the optional download and :func:`load_dataset`;
* ``folders.py``: image folders in ``ImageFolder`` layout (:func:`load_image_folder`);
* ``loaders.py``: any data form (ImageDataset, tensors, a torch Dataset, a DataLoader, an
  iterable of batches) as checked batches (:func:`batches`, :func:`train_batches`).

Shapes: every dataset gives 32 x 32 images, so one model fits all of them. Fashion-MNIST and
MNIST keep their single channel (``in_channels=1``) and are zero-padded by 2 pixels on each side
(28 -> 32, black background, before normalisation), which matches the CIFAR stem of
:func:`tnconv.models.resnet50` and gives :func:`tnconv.models.cnn4` a clean 32 -> 2 pooling chain.

Examples
--------
>>> from tnconv.data import DATASETS
>>> list(DATASETS), DATASETS["FashionMNIST"].in_channels
(['cifar10', 'cifar100', 'fashion-mnist', 'mnist'], 1)
"""

from __future__ import annotations

from .catalog import DATASETS, SPLITS, SYSTEM_DATA_DIR, DatasetInfo, canonical_name
from .folders import is_folder_spec, load_image_folder
from .images import ImageDataset, as_tensors, check_images, check_labels
from .loaders import batches, check_model_input, check_sample_labels, train_batches
from .sources import data_search_path, load_dataset

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "ImageDataset",
    "SPLITS",
    "as_tensors",
    "batches",
    "canonical_name",
    "check_images",
    "check_labels",
    "check_model_input",
    "check_sample_labels",
    "is_folder_spec",
    "data_search_path",
    "load_dataset",
    "load_image_folder",
    "SYSTEM_DATA_DIR",
    "train_batches",
]
