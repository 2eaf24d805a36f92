"""tnconv.data: search order, missing-data error, IDX parsing, subsets, batches, augmentation."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from tnconv import data as tdata
from tnconv.data import DATASETS, ImageDataset, canonical_name, data_search_path, load_dataset
from tnconv.data import sources as tsources

SYSTEM_FMNIST = tdata.SYSTEM_DATA_DIR / "fashion-mnist"


def _write_idx(folder, split, label, n=3, gz=True):
    """Write tiny MNIST-style IDX files whose labels are all ``label`` (marks the source)."""
    folder.mkdir(parents=True, exist_ok=True)
    img_stem, lbl_stem = tsources._IDX_FILES[split]
    rng = np.random.default_rng(label)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    img = struct.pack(">BBBBiii", 0, 0, 8, 3, n, 28, 28) + images.tobytes()
    lbl = struct.pack(">BBBBi", 0, 0, 8, 1, n) + bytes([label] * n)
    for stem, payload in ((img_stem, img), (lbl_stem, lbl)):
        if gz:
            with gzip.open(folder / f"{stem}.gz", "wb") as fh:
                fh.write(payload)
        else:
            (folder / stem).write_bytes(payload)
    return images


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Every search location points into tmp_path; returns the four base folders."""
    dirs = {k: tmp_path / k for k in ("root", "env", "cache", "system")}
    monkeypatch.setenv("TNCONV_DATA", str(dirs["env"]))
    monkeypatch.setenv("TNCONV_CACHE", str(dirs["cache"]))
    monkeypatch.setenv("TNCONV_SYSTEM_DATA", str(dirs["system"]))
    return dirs


@pytest.mark.parametrize(
    "alias", ["fashion-mnist", "fashion_mnist", "FashionMNIST", "fashionmnist"]
)
def test_aliases(alias):
    assert canonical_name(alias) == "fashion-mnist"


def test_unknown_name_and_split():
    with pytest.raises(ValueError, match=r"unknown dataset 'svhn'.*cifar10.*fashion-mnist"):
        load_dataset("svhn", "train")
    with pytest.raises(ValueError, match=r"unknown split 'val'.*train, test"):
        load_dataset("mnist", "val")


def test_search_order(isolated):
    # the same dataset in all four places, labelled by where it is
    _write_idx(isolated["root"], "test", 1)
    _write_idx(isolated["env"] / "mnist", "test", 2)  # <dir>/<name> layout
    _write_idx(isolated["cache"] / "data" / "MNIST" / "raw", "test", 3, gz=False)  # torchvision
    _write_idx(isolated["system"] / "mnist", "test", 4)  # Debian layout
    order = [isolated["root"], isolated["env"], isolated["cache"] / "data",
             isolated["system"] / "mnist"]
    assert data_search_path("mnist", isolated["root"]) == order
    assert load_dataset("mnist", "test", root=isolated["root"]).labels.tolist() == [1, 1, 1]
    assert load_dataset("mnist", "test").labels.tolist() == [2, 2, 2]
    for label, folder in ((2, isolated["env"]), (3, isolated["cache"])):
        for f in folder.rglob("*-ubyte*"):
            f.unlink()
        assert load_dataset("mnist", "test").labels.tolist() == [label + 1] * 3


def test_idx_parsing_padding_and_normalisation(isolated):
    raw = _write_idx(isolated["root"], "train", 7, n=5)
    ds = load_dataset("mnist", "train", root=isolated["root"])
    assert ds.images.shape == (5, 1, 32, 32) and ds.images.dtype == torch.float32
    assert ds.labels.dtype == torch.int64
    info = DATASETS["mnist"]
    pixels = ds.images[:, 0, 2:30, 2:30] * info.std[0] + info.mean[0]
    torch.testing.assert_close(pixels, torch.from_numpy(raw).float() / 255, atol=1e-5, rtol=0)
    border = ds.images[:, :, :2, :]  # zero-padded in pixel space: normalised black
    torch.testing.assert_close(border, torch.full_like(border, -info.mean[0] / info.std[0]))


def test_missing_data_error_names_every_folder(isolated):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("fashion-mnist", "train", root=isolated["root"])
    message = str(err.value)
    for folder in (isolated["root"], isolated["env"], isolated["cache"] / "data",
                   isolated["system"] / "fashion-mnist"):
        assert str(folder) in message
    assert "dataset-fashion-mnist" in message and "download=True" in message
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        load_dataset("cifar10", "test")


def test_truncated_idx_file_rejected(isolated):
    _write_idx(isolated["root"], "test", 1)
    path = isolated["root"] / "t10k-images-idx3-ubyte.gz"
    payload = gzip.decompress(path.read_bytes())
    with gzip.open(path, "wb") as fh:
        fh.write(payload[:-100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_dataset("mnist", "test", root=isolated["root"])


def test_real_fashion_mnist(fmnist_train, fmnist_test):
    assert fmnist_train.name == "fashion-mnist" and fmnist_train.split == "train"
    assert fmnist_train.images.shape == (3000, 1, 32, 32)
    assert (fmnist_train.num_classes, fmnist_train.in_channels, fmnist_train.image_size) == (
        10, 1, 32)
    assert len(fmnist_test) == 1000
    assert set(fmnist_train.labels.unique().tolist()) == set(range(10))
    centre = fmnist_train.images[:, :, 2:30, 2:30]
    assert abs(centre.mean().item()) < 0.05 and abs(centre.std().item() - 1) < 0.05


@pytest.mark.skipif(not SYSTEM_FMNIST.is_dir(), reason="dataset-fashion-mnist not installed")
def test_debian_folder_matches_raw_bytes():
    ds = load_dataset("fashion-mnist", "test", root=SYSTEM_FMNIST)
    with gzip.open(SYSTEM_FMNIST / "t10k-images-idx3-ubyte.gz", "rb") as fh:
        first = np.frombuffer(fh.read(), dtype=np.uint8, offset=16, count=28 * 28)
    with gzip.open(SYSTEM_FMNIST / "t10k-labels-idx1-ubyte.gz", "rb") as fh:
        labels = np.frombuffer(fh.read(), dtype=np.uint8, offset=8)
    info = DATASETS["fashion-mnist"]
    pixels = (ds.images[0, 0, 2:30, 2:30] * info.std[0] + info.mean[0]) * 255
    expected = torch.from_numpy(first.reshape(28, 28).copy())
    assert torch.equal(pixels.round().to(torch.uint8), expected)
    assert torch.equal(ds.labels, torch.from_numpy(labels.astype(np.int64)))


def _toy(n=10, name="mnist", channels=1):
    images = torch.arange(n * channels * 32 * 32, dtype=torch.float32).reshape(n, channels, 32, 32)
    return ImageDataset(images, torch.arange(n) % 10, name, "train")


def test_subset_is_fixed_and_distinct():
    ds = _toy(50)
    a, b, c = ds.subset(20), ds.subset(20), ds.subset(20, seed=1)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    firsts = a.images[:, 0, 0, 0].tolist()
    assert len(set(firsts)) == 20
    assert ds.subset([3, 4]).images[:, 0, 0, 0].tolist() == [3 * 1024, 4 * 1024]
    with pytest.raises(ValueError, match="subset size"):
        ds.subset(51)


def test_batches_cover_every_image_once():
    ds = _toy(10)
    plain = list(ds.batches(4))
    assert [len(y) for _, y in plain] == [4, 4, 2]
    g = torch.Generator().manual_seed(0)
    seen = torch.cat([x[:, 0, 0, 0] for x, _ in ds.batches(3, shuffle=True, generator=g)])
    assert sorted(seen.tolist()) == [i * 1024.0 for i in range(10)]
    assert seen.tolist() != sorted(seen.tolist())
    assert [len(y) for _, y in ds.batches(4, drop_last=True)] == [4, 4]


def test_to_device_keeps_everything():
    ds = _toy(4)
    moved = ds.to("cpu")
    assert moved is ds
    meta = torch.device("meta")
    on_meta = ds.to(meta)
    assert on_meta.device == meta and on_meta.name == "mnist" and len(on_meta) == 4


@pytest.mark.parametrize("name,channels", [("fashion-mnist", 1), ("cifar10", 3)])
def test_augmentation_is_crop_and_flip(name, channels):
    torch.manual_seed(0)
    ds = ImageDataset(torch.randn(16, channels, 32, 32), torch.zeros(16, dtype=torch.long),
                      name, "train")
    info = DATASETS[name]
    g = torch.Generator().manual_seed(0)
    out = ds.augment(ds.images, generator=g)
    assert out.shape == ds.images.shape
    fill = torch.tensor([-m / s for m, s in zip(info.mean, info.std, strict=True)]).view(-1, 1, 1)
    flipped = 0
    for x, y in zip(ds.images, out, strict=True):
        # every output is a window of the input padded with normalised black (maybe flipped)
        padded = fill.expand(channels, 32 + 2 * info.crop_padding, 32 + 2 * info.crop_padding)
        padded = padded.clone()
        p = info.crop_padding
        padded[:, p:p + 32, p:p + 32] = x
        windows = [padded[:, i:i + 32, j:j + 32] for i in range(2 * p + 1)
                   for j in range(2 * p + 1)]
        if any(torch.equal(y, w) for w in windows):
            continue
        assert info.flip and any(torch.equal(y, w.flip(2)) for w in windows)
        flipped += 1
    assert (flipped > 0) == info.flip
    same = ds.augment(ds.images, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, same)


def test_short_idx_header_is_a_clear_error(isolated):
    _write_idx(isolated["root"], "test", 1)
    # magic says 3 dimensions but the file ends after one of them
    (isolated["root"] / "t10k-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(struct.pack(">BBBBi", 0, 0, 8, 3, 5)))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_dataset("mnist", "test", root=isolated["root"])


def test_corrupt_cifar_folder_is_a_clear_error(isolated):
    (isolated["root"] / "cifar-10-batches-py").mkdir(parents=True)  # present but empty
    with pytest.raises(ValueError, match=r"cifar10.*incomplete or corrupt.*cifar-10-batches-py"):
        load_dataset("cifar10", "test", root=isolated["root"])


def test_subset_accepts_numpy_integers():
    ds = _toy(50)
    assert len(ds.subset(np.int64(20))) == 20
    assert torch.equal(ds.subset(np.int64(20)).labels, ds.subset(20).labels)


def test_datasets_registry_folds_aliases_and_lists_names():
    assert DATASETS["CIFAR-10"] is DATASETS["cifar10"] and "Fashion_MNIST" in DATASETS
    assert list(DATASETS) == ["cifar10", "cifar100", "fashion-mnist", "mnist"]
    assert "svhn" not in DATASETS
    with pytest.raises(ValueError, match=r"unknown dataset 'svhn'; valid names: cifar10, "
                                         r"cifar100, fashion-mnist, mnist \(aliases: "):
        DATASETS["svhn"]
    with pytest.raises(TypeError, match="must be a str"):
        canonical_name(10)
