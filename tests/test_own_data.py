"""Your own model and data: every data form gives the same accuracy, in the API and the CLI.

A few hundred Fashion-MNIST test images are written as PNG files into an ImageFolder tree; the
same images as tensors, a Subset, a DataLoader and the folder must give identical evaluations
and sweep rows. Bad input gets one clear error each.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

import tnconv
from tnconv.cli import main
from tnconv.data import ImageDataset, load_dataset
from tnconv.models import cnn4
from tnconv.train import evaluate, fit

N_IMAGES = 300
SWEEP = dict(layers=["block2.conv", "block3.conv"], cuts=["out|in,kh,kw", "out,kh|in,kw"],
             levels=[1.0, 0.5, 0.1], batch_size=64, device="cpu", progress=False)
FMNIST = dict(resize=None, crop=None, mean=(0.2860,), std=(0.3530,), channels=1)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """(folder, x, y): N_IMAGES test images as PNGs in root/test/<class>/, and as tensors in
    the folder's order (ImageFolder sorts by class, then file name)."""
    from PIL import Image

    try:
        test = load_dataset("fashion-mnist", "test").subset(N_IMAGES, seed=0)
    except FileNotFoundError as exc:
        pytest.skip(f"Fashion-MNIST not available: {exc}")
    root = tmp_path_factory.mktemp("fmnist-folder")
    pixels = (test.images * 0.3530 + 0.2860) * 255  # back to the 0..255 values of the files
    pixels = pixels.round().clamp(0, 255).to(torch.uint8)[:, 0].numpy()
    for i, (img, label) in enumerate(zip(pixels, test.labels.tolist())):
        folder = root / "test" / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="L").save(folder / f"{i:04d}.png")
    order = sorted(range(N_IMAGES), key=lambda i: (int(test.labels[i]), i))
    return root, test.images[order], test.labels[order]


@pytest.fixture(scope="module")
def trained(images):
    """A narrow cnn4 trained by fit from a DataLoader (1 epoch, 2000 training images)."""
    try:
        train = load_dataset("fashion-mnist", "train").subset(2000, seed=1)
    except FileNotFoundError as exc:
        pytest.skip(f"Fashion-MNIST not available: {exc}")
    torch.manual_seed(0)
    model = cnn4(10, 1, widths=(4, 8, 8, 8))
    loader = DataLoader(TensorDataset(train.images, train.labels), batch_size=64, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    history = fit(model, loader, epochs=1, progress=False, device="cpu")
    assert len(history) == 1 and history[0]["train_accuracy"] > 0.3
    return model


def _forms(images):
    root, x, y = images
    big_x = torch.cat([torch.zeros(5, *x.shape[1:]), x])
    big_y = torch.cat([torch.zeros(5, dtype=torch.long), y])
    return {
        "tensors": (x, y),
        "image-dataset": ImageDataset(x, y, "fashion-mnist", "test"),
        "subset": Subset(TensorDataset(big_x, big_y), list(range(5, 5 + N_IMAGES))),
        "dataloader": DataLoader(TensorDataset(x, y), batch_size=64),
        "batches": list(zip(x.split(64), y.split(64))),
        "folder": load_dataset(root, "test", **FMNIST),
    }


def test_the_folder_holds_the_same_images(images):
    root, x, y = images
    folder = load_dataset(root, "test", **FMNIST)
    assert len(folder) == N_IMAGES and folder.classes[0] == "class0"
    for i in (0, 17, N_IMAGES - 1):
        img, label = folder[i]
        assert label == int(y[i]) and torch.equal(img, x[i])


def test_evaluate_is_the_same_on_every_form(images, trained):
    results = {name: evaluate(trained, data, batch_size=64)
               for name, data in _forms(images).items()}
    ref = results["tensors"]
    assert 0.3 < ref["accuracy"] < 1 and ref["n"] == N_IMAGES
    for name, res in results.items():
        assert res["accuracy"] == ref["accuracy"] and res["n"] == N_IMAGES, name
        assert res["loss"] == pytest.approx(ref["loss"], rel=1e-6), name


def _columns(rows):
    return [(r["layer"], r["cut"], r["level"], r["rank"], r["accuracy"], r["n"]) for r in rows]


def test_sweep_is_the_same_on_every_form(images, trained):
    rows = {name: tnconv.sweep(trained, data, **SWEEP) for name, data in _forms(images).items()}
    ref = _columns(rows["tensors"])
    assert len(ref) == 12 and any(r["accuracy_drop"] > 0 for r in rows["tensors"])
    for name, r in rows.items():
        assert r.info["eval_mode"] == "prefix", name
        assert _columns(r) == ref, name
        assert [a["loss"] for a in r] == pytest.approx([a["loss"] for a in rows["tensors"]],
                                                       rel=1e-6)


@pytest.mark.parametrize("form", ["dataloader", "folder"])
def test_memory_budget_fallback_gives_the_same_rows(images, trained, form):
    data = _forms(images)[form]
    cached = tnconv.sweep(trained, data, **SWEEP)
    with pytest.warns(UserWarning, match="over the budget cache_bytes=1 .*streaming"):
        streamed = tnconv.sweep(trained, data, cache_bytes=1, **SWEEP)
    assert _columns(streamed) == _columns(cached)
    assert streamed.info["evaluations"] == cached.info["evaluations"]


def test_cli_sweep_on_the_folder(images, trained, tmp_path, capsys):
    from tnconv.checkpoints import save_checkpoint

    root, x, y = images
    ckpt = save_checkpoint(trained, tmp_path / "narrow.pt", meta={
        "model": "cnn4", "dataset": "fashion-mnist", "model_kwargs": {"widths": [4, 8, 8, 8]}})
    out = tmp_path / "folder.csv"
    # the checkpoint's dataset gives the folder's preprocessing (1 channel, its mean and std)
    assert main(["sweep", str(ckpt), "--dataset", str(root), "--layers", "block2.conv",
                 "block3.conv", "--cuts", "out|in,kh,kw", "out,kh|in,kw", "--levels", "1",
                 "0.5", "0.1", "--batch-size", "64", "--device", "cpu", "--no-progress",
                 "--out", str(out)]) == 0
    assert f"{N_IMAGES} test images" in capsys.readouterr().out
    tnconv.sweep(trained, (x, y), out=tmp_path / "api.csv", **SWEEP)
    text, ref = out.read_text().splitlines(), (tmp_path / "api.csv").read_text().splitlines()
    assert len(text) == len(ref) == 13
    acc = text[0].split(",").index("accuracy")
    assert [t.split(",")[acc] for t in text] == [r.split(",")[acc] for r in ref]


def test_cli_eval_with_a_factory_and_a_state_dict(images, trained, tmp_path, monkeypatch,
                                                  capsys):
    root, x, y = images
    torch.save(trained.state_dict(), tmp_path / "weights.pt")
    (tmp_path / "my_nets.py").write_text(
        "from tnconv.models import cnn4\n\n\ndef narrow():\n"
        "    return cnn4(10, 1, widths=(4, 8, 8, 8))\n\n\nNOT_CALLABLE = 3\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "my_nets", raising=False)
    argv = ["eval", "my_nets:narrow", "--state-dict", str(tmp_path / "weights.pt"),
            "--dataset", str(root), "--channels", "1", "--resize", "0", "--crop", "0",
            "--mean", "0.2860", "--std", "0.3530", "--batch-size", "64", "--device", "cpu"]
    assert main(argv) == 0
    ref = evaluate(trained, (x, y))
    assert f"accuracy {ref['accuracy']:.4f}" in capsys.readouterr().out
    # bad factories and state dicts: one line each
    for spec, words in (("no_such_module_xyz:build", "cannot import 'no_such_module_xyz'"),
                        ("my_nets:missing", "has no 'missing'"),
                        ("my_nets:NOT_CALLABLE", "not a callable")):
        assert main(["eval", spec, "--dataset", str(root), "--device", "cpu"]) == 2
        assert words in capsys.readouterr().err
    torch.save(cnn4(10, 1).state_dict(), tmp_path / "wide.pt")
    assert main(["eval", "my_nets:narrow", "--state-dict", str(tmp_path / "wide.pt"),
                 "--dataset", str(root), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "does not fit CNN4" in err and "shape mismatches" in err and err.count("\n") == 1


def test_cli_spectra_of_a_factory_with_a_state_dict_and_a_seed(trained, tmp_path, monkeypatch,
                                                               capsys):
    torch.save(trained.state_dict(), tmp_path / "weights.pt")
    (tmp_path / "my_spectra_nets.py").write_text(
        "from tnconv.models import cnn4\n\n\ndef narrow():\n"
        "    return cnn4(10, 1, widths=(4, 8, 8, 8))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "my_spectra_nets", raising=False)
    argv = ["spectra", "my_spectra_nets:narrow", "--state-dict", str(tmp_path / "weights.pt"),
            "--cuts", "out|in,kh,kw", "--out", str(tmp_path / "atlas.csv")]
    assert main(argv) == 0
    import pandas as pd

    rows = pd.read_csv(tmp_path / "atlas.csv")
    ref = tnconv.spectra_atlas(trained, cuts=["out|in,kh,kw"]).to_pandas()
    np.testing.assert_allclose(rows["entropy"], ref["entropy"], rtol=1e-6)
    # a model by name is random under --seed: the same seed gives the same table, another not
    tables = []
    for seed in (3, 3, 4):
        assert main(["spectra", "cnn4", "--in-channels", "1", "--cuts", "out|in,kh,kw",
                     "--seed", str(seed), "--out", str(tmp_path / f"s{len(tables)}.csv")]) == 0
        tables.append(pd.read_csv(tmp_path / f"s{len(tables)}.csv")["entropy"].tolist())
    assert tables[0] == tables[1] != tables[2]
    capsys.readouterr()


class _Samples(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_bad_data_gets_one_clear_error(images, trained, tmp_path):
    from PIL import Image

    good = (torch.zeros(1, 32, 32), 1)
    pil = Image.fromarray(np.zeros((32, 32), dtype=np.uint8))
    cases = [
        (_Samples([good, good, (pil, 1)]), TypeError, "sample 2: the image is a PIL"),
        (_Samples([good, (torch.zeros(32, 32), 1)]), ValueError, "sample 1: the image is"),
        (_Samples([good] * 3 + [(torch.zeros(1, 32, 32), "cat")]), TypeError,
         "sample 3: the label is a builtins.str"),
        (_Samples([good, (torch.zeros(1, 28, 28), 0)]), ValueError,
         r"sample 1: image shape \(1, 28, 28\) differs"),
        (_Samples([good] * 70 + [(torch.zeros(1, 32, 32), 12)]), ValueError,
         "sample 70 has label 12, out of range for a model with 10 outputs"),
        ((torch.zeros(4, 1, 32, 32), torch.tensor([0, 1, -1, 2])), ValueError, "sample 2 has "
         "label -1"),
        ([(torch.zeros(2, 1, 32, 32), torch.zeros(2))], TypeError, "need int class indices"),
        ("fashion-mnist", TypeError, "data must be a tnconv ImageDataset"),
    ]
    for data, exc, match in cases:
        with pytest.raises(exc, match=match):
            evaluate(trained, data, batch_size=64)
    with pytest.raises(ValueError, match="sample 70 has label 12"):
        fit(cnn4(10, 1, widths=(4, 4, 4, 4)), cases[4][0], epochs=1, batch_size=64,
            progress=False)
    with pytest.raises(ValueError, match="sample 70 has label 12"):
        tnconv.sweep(trained, cases[4][0], **SWEEP)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is empty: it needs one sub-folder per class"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "empty" / "cats").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no image folder"):
        load_dataset(tmp_path / "missing")


def test_get_model_weights_offline_error(monkeypatch, tmp_path):
    from urllib.error import URLError

    import torchvision.models
    from torchvision.models._api import WeightsEnum

    from tnconv.models import get_model

    def offline(self, *args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError) as err:
        get_model("resnet18", weights="DEFAULT")
    msg = str(err.value)
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    assert f"put {url.rsplit('/', 1)[-1]}" in msg and str(tmp_path / "hub" / "checkpoints") in msg
    with pytest.raises(ValueError, match="unknown weights 'BEST' for resnet18; valid: DEFAULT, "
                                         "IMAGENET1K_V1"):
        get_model("resnet18", weights="BEST")
    # the weights API passes through: a model built from weights in the hub cache
    monkeypatch.setattr(WeightsEnum, "get_state_dict",
                        lambda self, *a, **k: torchvision.models.resnet18().state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert get_model("resnet18", weights="IMAGENET1K_V1").fc.out_features == 1000


def test_run_study_takes_your_own_model_and_data(trained, tmp_path):
    """The study runner on a given model, with its data as a torch Dataset and as tensors:
    the same sweep rows; and the clear errors of a half-given model/data."""
    import dataclasses

    import pandas as pd

    from tnconv.study.experiment import run_study
    from tnconv.study.profiles import PROFILE_SETS

    test = load_dataset("fashion-mnist", "test").subset(200, seed=1)
    train = load_dataset("fashion-mnist", "train").subset(200, seed=1)
    cfg = dataclasses.replace(PROFILE_SETS["cnn4"].profiles["tiny"], test_subset=None,
                              retrain_subset=None, progress=False, layers=None)
    forms = {"dataset": (TensorDataset(train.images, train.labels),
                         TensorDataset(test.images, test.labels)),
             "tensors": (train, (test.images, test.labels))}
    rows = {}
    for name, (tr, te) in forms.items():
        res = run_study(dataclasses.replace(cfg, out=str(tmp_path / name)), model=trained,
                        train_data=tr, test_data=te)
        assert (tmp_path / name / "summary.md").is_file()
        rows[name] = pd.read_csv(tmp_path / name / "sweep_single.csv")
        assert res["findings"]["baseline_accuracy"] == pytest.approx(
            evaluate(trained, (test.images, test.labels))["accuracy"])
    assert rows["dataset"]["accuracy"].tolist() == rows["tensors"]["accuracy"].tolist()
    with pytest.raises(ValueError, match="pass test_data"):
        run_study(dataclasses.replace(cfg, out=str(tmp_path / "x")), model=trained)
    with pytest.raises(ValueError, match="need the model"):
        run_study(dataclasses.replace(cfg, out=str(tmp_path / "y")), test_data=test)


def test_cli_study_on_a_factory_model_and_an_image_folder(images, trained, tmp_path,
                                                          monkeypatch, capsys):
    """``tnconv study`` with ``--model MODULE:CALLABLE --state-dict`` and an ImageFolder
    ``--dataset``: the same single-layer rows as ``tnconv.sweep`` on the tensors."""
    import pandas as pd

    root, x, y = images
    torch.save(trained.state_dict(), tmp_path / "weights.pt")
    (tmp_path / "study_nets.py").write_text(
        "from tnconv.models import cnn4\n\n\ndef narrow():\n"
        "    return cnn4(10, 1, widths=(4, 8, 8, 8))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "study_nets", raising=False)
    out = tmp_path / "run"
    argv = ["study", "--profiles", "cnn4", "--tiny", "--model", "study_nets:narrow",
            "--state-dict", str(tmp_path / "weights.pt"), "--dataset", str(root),
            "--channels", "1", "--resize", "0", "--crop", "0", "--mean", "0.2860",
            "--std", "0.3530", "--retrain-epochs", "0", "--test-subset", "0", "--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    rows = pd.read_csv(out / "sweep_single.csv")
    ref = tnconv.sweep(trained, (x, y), layers=["block2.conv", "block4.conv"],
                       cuts=["out|in,kh,kw", "out,kh|in,kw"], levels=(1.0, 0.5, 0.1),
                       progress=False).to_pandas()
    key = ["layer", "cut", "level"]
    merged = rows.merge(ref, on=key, suffixes=("", "_ref"))
    assert len(merged) == len(ref) == 12
    assert (merged["accuracy"] == merged["accuracy_ref"]).all()
    assert "study_nets" not in str(out) and (out / "summary.md").is_file()
