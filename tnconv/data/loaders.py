"""Any form of labelled image data, turned into checked ``(x, y)`` batches.

Every entry point that takes data (:func:`tnconv.train.fit`, :func:`tnconv.train.evaluate`,
:func:`tnconv.sweep`, :func:`tnconv.retrain`, the study runner) goes through this module, so
they all accept the same forms and give the same accuracy for the same images in each:

* a tnconv :class:`~tnconv.data.ImageDataset` (batched and augmented on its own device);
* an ``(images, labels)`` pair of tensors, ``N x C x H x W`` and ``N``;
* any map-style :class:`torch.utils.data.Dataset` yielding ``(image, label)`` with a
  ``C x H x W`` float tensor and an integer label (torchvision datasets with a ``ToTensor``
  transform, ``ImageFolder``, ``Subset``, ``ConcatDataset``, ``TensorDataset``); it is read in
  order by a :class:`~torch.utils.data.DataLoader` of ``batch_size`` (shuffled for training);
* any :class:`~torch.utils.data.DataLoader`, used as given (its batch size, sampler, workers
  and transforms), or any re-iterable of ``(x, y)`` batches (a list, a generator function's
  result is usable once).

Nothing is loaded into memory that the form does not already hold: a dataset or loader streams
batch by batch. Bad samples raise one :class:`TypeError` / :class:`ValueError` naming the index
of the offending sample (for a dataset) or its batch and position (for a loader).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from .images import ImageDataset, check_images

__all__ = ["Batches", "TrainBatches", "batches", "check_model_input", "check_sample_labels",
           "data_length", "is_in_memory", "take_subset", "train_batches"]


def is_in_memory(data: Any) -> bool:
    """Whether ``data`` is an ImageDataset or an ``(images, labels)`` pair of tensors.

    Examples
    --------
    >>> is_in_memory((torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long)))
    True
    """
    if isinstance(data, ImageDataset):
        return True
    return (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, torch.Tensor) for t in data) and data[0].dim() == 4)


def _is_map_style(data: Any) -> bool:
    if isinstance(data, (DataLoader, torch.Tensor, str, bytes, dict)):
        return False
    if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        return False
    if isinstance(data, (list, tuple)):  # a list of batches or a list of samples?
        first = data[0] if len(data) else None
        return not (isinstance(first, (tuple, list)) and len(first) == 2
                    and isinstance(first[0], torch.Tensor) and first[0].dim() == 4)
    return True


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__module__}.{type(value).__name__}"


def _check_sample(item: Any, index: int) -> tuple[torch.Tensor, int]:
    """One ``(image, label)`` sample of a map-style dataset, checked."""
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
        raise TypeError(f"sample {index} of the dataset is {_describe(item)}; a dataset must "
                        "yield (image, label) pairs")
    x, y = item
    if not isinstance(x, torch.Tensor):
        hint = ("; give the dataset a transform that makes tensors, e.g. "
                "torchvision.transforms.ToTensor()" if type(x).__module__.startswith("PIL")
                else "")
        raise TypeError(f"sample {index}: the image is {_describe(x)}, not a tensor{hint}")
    if x.dim() != 3 or not x.is_floating_point():
        raise ValueError(f"sample {index}: the image is {_describe(x)}; need a float tensor "
                         "C x H x W")
    if isinstance(y, torch.Tensor) and y.numel() == 1 and not y.is_floating_point():
        y = int(y.item())
    if isinstance(y, bool) or not isinstance(y, numbers.Integral):
        raise TypeError(f"sample {index}: the label is {_describe(y)}; need an int class index")
    return x, int(y)


class _Indexed(Dataset):
    """``(index, dataset[index])``, so a bad sample can be named by its index."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[int, Any]:
        return index, self.data[index]


class _Batch(tuple):
    """``(x, y, indices)`` of a batch read from a map-style dataset."""


def collate_samples(items: list[tuple[int, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack checked ``(index, (image, label))`` samples into one ``(x, y, indices)`` batch."""
    xs, ys = [], []
    for index, item in items:
        x, y = _check_sample(item, index)
        if xs and x.shape != xs[0].shape:
            raise ValueError(f"sample {index}: image shape {tuple(x.shape)} differs from "
                             f"{tuple(xs[0].shape)} of sample {items[0][0]}; resize or crop "
                             "the images to one size")
        xs.append(x)
        ys.append(y)
    return _Batch((torch.stack(xs), torch.tensor(ys, dtype=torch.int64),
                   [index for index, _ in items]))


def _check_batch(item: Any, number: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    where = f"batch {number} (samples {offset}..)"
    if not (isinstance(item, (tuple, list)) and len(item) >= 2):
        raise TypeError(f"{where} is {_describe(item)}; need (x, y) batches")
    x, y = item[0], item[1]
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{where}: x is {_describe(x)}; need a float tensor N x C x H x W")
    if x.dim() != 4:
        raise ValueError(f"{where}: x is {_describe(x)}; need a float tensor N x C x H x W")
    if (not isinstance(y, torch.Tensor) or y.is_floating_point() or y.is_complex()
            or y.dtype == torch.bool):
        raise TypeError(f"{where}: y is {_describe(y)}; need int class indices, one per image")
    if y.dim() != 1:
        raise ValueError(f"{where}: y is {_describe(y)}; need int class indices, one per image")
    if len(y) != len(x):
        raise ValueError(f"{where}: {len(x)} images but {len(y)} labels")
    return x, y.long()


def check_sample_labels(y: torch.Tensor, num_classes: int, *, offset: int = 0,
                 indices: list[int] | None = None) -> None:
    """Raise a ValueError naming the first sample whose label is not in ``0..num_classes-1``.

    The sample is named by ``indices[i]`` when given (a shuffled dataset), else ``offset + i``.

    Examples
    --------
    >>> check_sample_labels(torch.tensor([0, 3, 9]), 10)
    >>> check_sample_labels(torch.tensor([0, 12]), 10, offset=100)
    Traceback (most recent call last):
    ...
    ValueError: sample 101 has label 12, out of range for a model with 10 outputs (0..9)
    """
    bad = (y < 0) | (y >= num_classes)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        where = indices[i] if indices is not None else offset + i
        raise ValueError(f"sample {where} has label {int(y[i])}, out of range for a model "
                         f"with {num_classes} outputs (0..{num_classes - 1})")


def check_model_input(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Raise a ValueError when a batch of images cannot go into ``model``'s first convolution.

    The first module with ``in_channels`` and a 2-D ``kernel_size`` (``nn.Conv2d`` or a
    tensorized layer) sets what the images must be: ``N x C x H x W`` with its ``in_channels``,
    and at least its kernel's size. Then one image goes through the model (eval mode, no
    gradient), and an error from inside it (images too small for its pooling, say) becomes a
    ValueError that names the image shape.

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    >>> check_model_input(net, torch.zeros(2, 3, 8, 8))
    >>> check_model_input(net, torch.zeros(2, 1, 8, 8))
    Traceback (most recent call last):
    ...
    ValueError: images have 1 channel, the model takes in_channels=3
    """
    first = next((m for m in model.modules() if isinstance(getattr(m, "in_channels", None), int)
                  and len(getattr(m, "kernel_size", ())) == 2), None)
    if first is not None:
        check_images(x, in_channels=first.in_channels, min_size=min(first.kernel_size))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x[:1])
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"the model cannot run on images of shape {tuple(x.shape[1:])}: "
                         f"{reason}") from exc
    finally:
        model.train(was_training)


def data_length(data: Any) -> int | None:
    """Number of images in ``data`` when it is known without a pass (else ``None``)."""
    if isinstance(data, ImageDataset):
        return len(data)
    if is_in_memory(data):
        return len(data[0])
    if isinstance(data, DataLoader):
        ds = data.dataset
        return len(ds) if hasattr(ds, "__len__") else None  # type: ignore[arg-type]
    if _is_map_style(data):
        return len(data)
    return None


def take_subset(data: Any, n: int, *, seed: int = 0) -> Any:
    """A seeded random subset of ``n`` samples of any sized data form (all of it when smaller).

    An :class:`ImageDataset` gives its own ``subset``; ``(images, labels)`` tensors give
    tensors; a map-style ``Dataset`` gives a ``torch.utils.data.Subset``. A DataLoader or an
    iterable of batches has no samples to choose from: that is a TypeError.

    Examples
    --------
    >>> from torch.utils.data import TensorDataset
    >>> len(take_subset(TensorDataset(torch.zeros(10, 1, 4, 4), torch.zeros(10)), 3))
    3
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"a subset size must be an int >= 1, got {n!r}")
    if isinstance(data, ImageDataset):
        return data.subset(min(n, len(data)), seed=seed)
    gen = torch.Generator().manual_seed(seed)
    if (isinstance(data, tuple) and len(data) == 2
            and all(isinstance(t, torch.Tensor) for t in data)):
        idx = torch.randperm(len(data[1]), generator=gen)[:n]
        return data[0][idx], data[1][idx]
    if _is_map_style(data):
        idx = torch.randperm(len(data), generator=gen)[:n].tolist()
        return torch.utils.data.Subset(data, idx)
    raise TypeError(f"a subset needs an ImageDataset, (images, labels) tensors or a map-style "
                    f"Dataset, got {type(data).__name__}; subset the data before passing it")


class Batches:
    """A re-iterable of checked ``(x, y)`` batches of ``data``, in a fixed order.

    Parameters
    ----------
    data
        Any form of the module docstring.
    batch_size
        Images per batch for an ImageDataset, a tensor pair or a map-style dataset (a
        DataLoader or iterable of batches keeps its own).
    num_workers
        Worker processes reading a map-style dataset.

    Examples
    --------
    >>> ds = torch.utils.data.TensorDataset(torch.zeros(5, 1, 4, 4), torch.arange(5))
    >>> [tuple(x.shape) for x, y in Batches(ds, 2)]
    [(2, 1, 4, 4), (2, 1, 4, 4), (1, 1, 4, 4)]
    """

    def __init__(self, data: Any, batch_size: int, *, num_workers: int = 0) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if data is None or isinstance(data, (str, bytes, torch.Tensor)):
            raise TypeError(_FORMS + f", got {_describe(data)}")
        self.data, self.batch_size, self.num_workers = data, batch_size, num_workers
        self.in_memory = is_in_memory(data)
        self.map_style = not self.in_memory and _is_map_style(data)
        if not (self.in_memory or self.map_style or isinstance(data, Iterable)):
            raise TypeError(_FORMS + f", got {_describe(data)}")
        self.one_shot = (not self.in_memory and not self.map_style
                         and iter(data) is data)  # type: ignore[call-overload]
        self._used = False

    def __len__(self) -> int:
        n = data_length(self.data) if not isinstance(self.data, DataLoader) else None
        if isinstance(self.data, DataLoader) or n is None:
            return len(self.data)  # type: ignore[arg-type]
        return -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        data, bs = self.data, self.batch_size
        if isinstance(data, ImageDataset):
            yield from data.batches(bs)
            return
        if self.in_memory:
            x, y = data
            _check_batch((x[:1], y[:1]), 0, 0)
            for start in range(0, len(x), bs):
                yield x[start:start + bs], y[start:start + bs].long()
            return
        if self.one_shot:
            if self._used:
                raise ValueError("this iterator of batches is used up: pass a DataLoader, a "
                                 "list or another re-iterable to go over the data again")
            self._used = True
        source = (DataLoader(_Indexed(data), batch_size=bs, shuffle=False,
                             num_workers=self.num_workers, collate_fn=collate_samples)
                  if self.map_style else data)
        offset = 0
        for number, item in enumerate(source):
            x, y = _check_batch(item, number, offset)
            offset += len(y)
            yield x, y


_FORMS = ("data must be a tnconv ImageDataset, an (images, labels) pair of tensors, a map-style "
          "torch Dataset of (image, label), a DataLoader or an iterable of (x, y) batches")


class TrainBatches:
    """Shuffled training batches of any data form, on ``device``, one epoch per :meth:`epoch`.

    An ImageDataset is copied to ``device`` once, shuffled and augmented there; a tensor pair is
    shuffled; a map-style dataset is read by a shuffling DataLoader; a DataLoader or iterable
    of batches is used as given (its own order and transforms). ``steps`` is the number of
    batches per epoch. Labels are checked against ``num_classes`` (found from the model's
    outputs on the first batch by ``probe`` when not given).
    """

    def __init__(self, data: Any, batch_size: int, *, device: torch.device, augment: bool,
                 generator: torch.Generator, num_workers: int = 0,
                 probe: Callable[[torch.Tensor], int] | None = None) -> None:
        self.device, self.augment, self.generator, self.probe = device, augment, generator, probe
        self.batch_size, self.num_classes = batch_size, None
        self.data = data.to(device) if isinstance(data, ImageDataset) else data
        n = data_length(data)
        self.drop_last = n is not None and n >= 2 * batch_size
        if isinstance(data, ImageDataset) or not is_in_memory(data):
            self.source = Batches(self.data, batch_size, num_workers=num_workers)
        if isinstance(data, ImageDataset):
            self.steps = self.data.num_batches(batch_size, drop_last=self.drop_last)
        elif is_in_memory(data):
            Batches(data, batch_size)  # checks the form
            self.steps = n // batch_size if self.drop_last else -(-n // batch_size)
        elif self.source.map_style:
            self.loader = DataLoader(
                _Indexed(data), batch_size=batch_size, shuffle=True, generator=generator,
                drop_last=self.drop_last, num_workers=num_workers, collate_fn=collate_samples)
            self.steps = len(self.loader)
        else:
            self.steps = (len(data) if hasattr(data, "__len__")  # type: ignore[arg-type]
                          else sum(1 for _ in self.source))

    def _raw(self) -> Iterator[Any]:
        data, bs = self.data, self.batch_size
        if isinstance(data, ImageDataset):
            return data.batches(bs, shuffle=True, augment=self.augment,
                                generator=self.generator, drop_last=self.drop_last)
        if is_in_memory(data):
            order = torch.randperm(len(data[0]), generator=self.generator)
            stop = self.steps * bs if self.drop_last else len(order)
            return ((data[0][order[i:i + bs].to(data[0].device)],
                     data[1][order[i:i + bs].to(data[1].device)].long())
                    for i in range(0, stop, bs))
        if self.source.map_style:
            return iter(self.loader)
        return iter(self.source)

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass: ``(x, y)`` batches on the device, labels checked."""
        non_blocking = self.device.type == "cuda"
        offset = 0
        for number, item in enumerate(self._raw()):
            x, y = _check_batch(item, number, offset)
            x = x.to(self.device, non_blocking=non_blocking)
            if self.num_classes is None and self.probe is not None:
                self.num_classes = self.probe(x)
                if is_in_memory(self.data):  # the labels once, not per batch
                    check_sample_labels(self.data.labels if isinstance(self.data, ImageDataset)
                                 else self.data[1], self.num_classes)
            if self.num_classes is not None and not is_in_memory(self.data):
                check_sample_labels(y, self.num_classes, offset=offset,
                             indices=item[2] if isinstance(item, _Batch) else None)
            offset += len(y)
            yield x, y.to(self.device, non_blocking=non_blocking)


def batches(data: Any, batch_size: int, *, num_workers: int = 0) -> Batches:
    """Checked ``(x, y)`` batches of any data form, in a fixed order (see :class:`Batches`).

    Examples
    --------
    >>> data = (torch.zeros(3, 1, 4, 4), torch.tensor([0, 1, 2]))
    >>> [y.tolist() for _, y in batches(data, 2)]
    [[0, 1], [2]]
    """
    return Batches(data, batch_size, num_workers=num_workers)


def train_batches(data: Any, batch_size: int, *, device: torch.device, augment: bool = True,
                  generator: torch.Generator | None = None, num_workers: int = 0,
                  probe: Callable[[torch.Tensor], int] | None = None) -> TrainBatches:
    """Training batches of any data form (see :class:`TrainBatches`).

    Examples
    --------
    >>> data = (torch.zeros(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2]))
    >>> tb = train_batches(data, 3, device=torch.device("cpu"))
    >>> tb.steps, sorted(torch.cat([y for _, y in tb.epoch()]).tolist())
    (2, [0, 0, 1, 1, 2, 2])
    """
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    return TrainBatches(data, batch_size, device=device, augment=augment, generator=gen,
                        num_workers=num_workers, probe=probe)
