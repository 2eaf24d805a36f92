"""tnconv.train: learning on real data, evaluation by hand, determinism, hooks, checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tnconv.checkpoints import default_checkpoint_path, load_checkpoint, save_checkpoint
from tnconv.data import ImageDataset
from tnconv.models import cnn4
from tnconv.pretrained import train_or_load
from tnconv.train import OPTIMIZERS, SCHEDULES, evaluate, fit, train_config


def _small_model(seed=0, in_channels=1, num_classes=10):
    torch.manual_seed(seed)
    return cnn4(num_classes, in_channels, widths=(8, 16, 16, 32))


def _toy(n=256, seed=0, name="fashion-mnist"):
    g = torch.Generator().manual_seed(seed)
    return ImageDataset(torch.randn(n, 1, 32, 32, generator=g),
                        torch.randint(0, 10, (n,), generator=g), name, "train")


def test_one_epoch_learns_fashion_mnist(fmnist_train, fmnist_test):
    torch.manual_seed(0)
    model = cnn4(10, 1)
    before = evaluate(model, fmnist_test)["accuracy"]
    history = fit(model, fmnist_train, epochs=1, batch_size=64, eval_data=fmnist_test,
                  progress=False, channels_last=False)
    after = evaluate(model, fmnist_test)
    assert before < 0.3
    assert after["accuracy"] > 0.6  # chance is 0.10
    assert after["accuracy"] == history[-1]["eval_accuracy"]
    assert set(history[0]) >= {"epoch", "train_loss", "train_accuracy", "eval_loss", "time"}
    assert not model.training


def test_evaluate_equals_hand_count(fmnist_test):
    model = _small_model(3).eval()
    result = evaluate(model, fmnist_test, batch_size=300)
    correct, loss, n = 0, 0.0, 0
    with torch.no_grad():
        for start in range(0, len(fmnist_test), 128):
            x = fmnist_test.images[start:start + 128]
            y = fmnist_test.labels[start:start + 128]
            logits = model(x)
            correct += sum(int(logits[i].argmax() == y[i]) for i in range(len(y)))
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            n += len(y)
    assert result["n"] == n == 1000
    assert result["accuracy"] == correct / n
    assert result["loss"] == pytest.approx(loss / n, rel=1e-5)
    assert "top5" not in result
    batches = list(fmnist_test.batches(250))  # an iterable of (x, y) works too
    assert evaluate(model, batches)["accuracy"] == result["accuracy"]


def test_evaluate_top5_for_100_classes():
    torch.manual_seed(0)
    ds = ImageDataset(torch.randn(64, 3, 32, 32), torch.randint(0, 100, (64,)), "cifar100",
                      "test")
    model = cnn4(100, 3, widths=(8, 8, 8, 8)).eval()
    result = evaluate(model, ds)
    with torch.no_grad():
        top5 = model(ds.images).topk(5, 1).indices
    hits = sum(int(ds.labels[i] in top5[i]) for i in range(64))
    assert result["top5"] == hits / 64
    assert result["accuracy"] <= result["top5"]


def test_evaluate_restores_mode_and_rejects_empty():
    model = _small_model().train()
    evaluate(model, _toy(16))
    assert model.training
    with pytest.raises(ValueError, match="no data"):
        evaluate(model, [])


def test_fit_is_deterministic_under_a_seed():
    data = _toy(256)
    runs = []
    for seed in (0, 0, 1):
        model = _small_model()
        history = fit(model, data, epochs=2, batch_size=64, seed=seed, progress=False)
        runs.append((history, model.state_dict()))
    (h0, s0), (h1, s1), (h2, s2) = runs
    assert [r["train_loss"] for r in h0] == [r["train_loss"] for r in h1]
    assert all(torch.equal(s0[k], s1[k]) for k in s0)
    assert any(not torch.equal(s0[k], s2[k]) for k in s0 if s0[k].is_floating_point())


def test_hooks_are_called_after_each_step_and_epoch():
    data = _toy(256)
    steps, epochs = [], []
    model = _small_model()
    fc = model.classifier.fc

    def project(m):  # e.g. keep a weight on a subspace after every optimizer step
        steps.append(1)
        m.classifier.fc.weight[:, :8] = 0

    fit(model, data, epochs=2, batch_size=64, progress=False, optimizer="adamw",
        schedule="cosine", step_callback=project, callback=lambda m, e: epochs.append(e))
    assert len(steps) == 2 * 4 and epochs == [1, 2]
    assert torch.all(fc.weight[:, :8] == 0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(optimizer="adam"), r"unknown optimizer 'adam'; valid names: sgd, adamw"),
    (dict(schedule="step"), r"unknown schedule 'step'; valid names: onecycle, cosine, constant"),
    (dict(epochs=0), "epochs must be a positive int"),
    (dict(lr=-1.0), "lr must be > 0"),
])
def test_fit_rejects_bad_options(kwargs, match):
    options = dict(epochs=1, progress=False) | kwargs
    with pytest.raises(ValueError, match=match):
        fit(_small_model(), _toy(64), **options)
    with pytest.raises(TypeError, match="need int class indices"):  # float labels
        fit(_small_model(), [(torch.zeros(1, 1, 32, 32), torch.zeros(1))], epochs=1)
    with pytest.raises(TypeError, match="ImageDataset"):  # not a data form at all
        fit(_small_model(), 3, epochs=1)


def test_checkpoint_round_trip(tmp_path):
    model = _small_model(5).eval()
    path = save_checkpoint(model, tmp_path / "sub" / "m.pt",
                           meta={"model": "cnn4", "dataset": "fashion-mnist", "accuracy": 0.5,
                                 "epochs": 1, "model_kwargs": {"widths": [8, 16, 16, 32]}})
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temporary left behind
    loaded, meta = load_checkpoint(path, expect={"model": "cnn4", "dataset": "fashion_mnist"})
    assert meta["num_classes"] == 10 and meta["in_channels"] == 1  # inferred
    assert meta["accuracy"] == 0.5 and meta["torch_version"] == torch.__version__
    assert "date" in meta and "tnconv_version" in meta
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    target = _small_model(9)
    same, _ = load_checkpoint(path, model=target)
    assert same is target and torch.equal(target.classifier.fc.weight, model.classifier.fc.weight)


def test_checkpoint_overwrite_is_atomic(tmp_path, monkeypatch):
    path = save_checkpoint(_small_model(), tmp_path / "m.pt",
                           meta={"model": "cnn4", "model_kwargs": {"widths": [8, 16, 16, 32]}})
    before = path.read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(_small_model(1), path, meta={"model": "cnn4"})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


@pytest.fixture
def checkpoint(tmp_path):
    return save_checkpoint(_small_model(), tmp_path / "good.pt",
                           meta={"model": "cnn4", "dataset": "fashion-mnist",
                                 "model_kwargs": {"widths": [8, 16, 16, 32]}})


def test_truncated_checkpoint_rejected(checkpoint, tmp_path):
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_checkpoint(bad)


def test_garbage_and_foreign_files_rejected(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(ValueError, match="not a readable tnconv checkpoint"):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match="not a tnconv checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_mismatched_checkpoint_rejected(checkpoint):
    with pytest.raises(ValueError, match=r"dataset is 'fashion-mnist', expected 'cifar10'"):
        load_checkpoint(checkpoint, expect={"dataset": "cifar10"})
    with pytest.raises(ValueError, match="do not fit the model"):
        load_checkpoint(checkpoint, model=cnn4(10, 1))  # default widths differ


def test_save_requires_model_name(tmp_path):
    with pytest.raises(ValueError, match="must name the model"):
        save_checkpoint(_small_model(), tmp_path / "x.pt", meta={"dataset": "mnist"})


def test_default_path_and_train_or_load_uses_cache(tnconv_cache):
    path = default_checkpoint_path("cnn4", "FashionMNIST")
    assert path == tnconv_cache / "checkpoints" / "cnn4-fashion-mnist.pt"
    model = _small_model(2)
    save_checkpoint(model, path, meta={"model": "cnn4", "dataset": "fashion-mnist",
                                       "epochs": 3, "accuracy": 0.9,
                                       "model_kwargs": {"widths": [8, 16, 16, 32]}})
    loaded, meta = train_or_load("cnn4", "fashion-mnist", device="cpu", epochs=3)
    assert meta["accuracy"] == 0.9
    assert torch.equal(loaded.classifier.fc.weight, model.classifier.fc.weight)


def test_train_config_is_layered():
    cpu = train_config("cnn4", "fashion-mnist", "cpu")
    assert cpu["epochs"] == 3 and cpu["optimizer"] == "sgd" and cpu["label_smoothing"] == 0.1
    assert train_config("resnet50", "cifar10", "cuda")["batch_size"] == 512


def test_evaluate_accepts_a_tensor_pair_like_sweep():
    torch.manual_seed(0)
    model = cnn4(10, 1, widths=(4, 4, 4, 4))
    x, y = torch.randn(10, 1, 32, 32), torch.randint(0, 10, (10,))
    pair = evaluate(model, (x, y), batch_size=3)
    batches = evaluate(model, [(x[:5], y[:5]), (x[5:], y[5:])])
    assert pair["n"] == 10 and pair["accuracy"] == batches["accuracy"]
    assert abs(pair["loss"] - batches["loss"]) < 1e-6


def test_corrupt_weights_rejected(checkpoint, tmp_path):
    model, _ = load_checkpoint(checkpoint)
    raw = checkpoint.read_bytes()
    weight = model.classifier.fc.weight.detach().numpy().tobytes()
    at = raw.index(weight)  # the stored bytes of one tensor
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(raw[:at] + bytes(64) + raw[at + 64:])  # same size, zip still readable
    with pytest.raises(ValueError, match="corrupt.*checksum"):
        load_checkpoint(bad)
    old = torch.load(checkpoint, weights_only=True)  # files written before checksums load
    del old["sha256"]
    torch.save(old, tmp_path / "old.pt")
    assert torch.equal(load_checkpoint(tmp_path / "old.pt")[0].classifier.fc.weight,
                       model.classifier.fc.weight)


def test_train_or_load_cache_respects_overrides(tnconv_cache, monkeypatch, tmp_path, capsys):
    path = default_checkpoint_path("cnn4", "fashion-mnist")
    save_checkpoint(_small_model(2), path,
                    meta={"model": "cnn4", "dataset": "fashion-mnist", "epochs": 3,
                          "train_config": {"epochs": 3, "lr": 0.1},
                          "model_kwargs": {"widths": [8, 16, 16, 32]}})
    assert train_or_load("cnn4", "fashion-mnist", device="cpu", lr=0.1)[1]["epochs"] == 3
    # a different option must not return the cached model: it retrains (and finds no data here)
    for var in ("TNCONV_DATA", "TNCONV_SYSTEM_DATA"):
        monkeypatch.setenv(var, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="not found"):
        train_or_load("cnn4", "fashion-mnist", device="cpu", lr=0.05)
    assert "lr" in capsys.readouterr().out


def test_train_or_load_has_one_home():
    """train_or_load sits above train and checkpoints (no cycle): neither re-exports it."""
    import tnconv
    import tnconv.checkpoints as ck
    import tnconv.pretrained as pre
    import tnconv.train as tr

    assert tnconv.train_or_load is pre.train_or_load
    assert not hasattr(tr, "train_or_load") and not hasattr(ck, "train_or_load")


@pytest.mark.parametrize("registry,bad,valid", [
    (OPTIMIZERS, "adam", "sgd, adamw"), (SCHEDULES, "step", "onecycle, cosine, constant"),
])
def test_registries_list_the_valid_names(registry, bad, valid):
    with pytest.raises(ValueError, match=f"unknown {registry.kind} '{bad}'; valid names: {valid}"):
        registry[bad]
    assert bad not in registry and list(registry) == valid.split(", ")
    with pytest.raises(KeyError):  # a dict's contract too
        registry[bad]


def test_train_or_load_trains_a_subset_and_reuses_it(fmnist_train, tnconv_cache, capsys):
    path = tnconv_cache / "narrow.pt"
    options = dict(epochs=1, device="cpu", path=path, train_subset=512, test_subset=200,
                   model_kwargs={"widths": (4, 8, 8, 8)}, progress=False, batch_size=64)
    model, meta = train_or_load("cnn4", "fashion-mnist", **options)
    assert path.is_file() and meta["train_images"] == 512 and meta["test_images"] == 200
    assert model.block1.conv.out_channels == 4 and meta["model_kwargs"] == {"widths": [4, 8, 8, 8]}
    again, meta2 = train_or_load("cnn4", "fashion-mnist", **options)  # loaded, not retrained
    assert meta2["train_seconds"] == meta["train_seconds"] and "date" in meta2
    assert "training" not in capsys.readouterr().out
    assert torch.equal(again.block1.conv.weight, model.block1.conv.weight)
    with pytest.raises(ValueError, match="positive int"):  # force: trains again
        train_or_load("cnn4", "fashion-mnist", **{**options, "epochs": 0}, force=True)
