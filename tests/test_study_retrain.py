"""Retraining recovers the accuracy of a hard-truncated CNN on real Fashion-MNIST images."""

from __future__ import annotations

import pytest
import torch

import tnconv
from tnconv.data import load_dataset
from tnconv.train import evaluate, fit

CUT = "out,kh|in,kw"


@pytest.fixture(scope="module")
def trained():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: one thread is fastest on a shared CPU
    try:
        train = load_dataset("fashion-mnist", "train").subset(2000, seed=0)
        test = load_dataset("fashion-mnist", "test").subset(1000, seed=0)
    except FileNotFoundError as exc:  # pragma: no cover - machines without the data
        pytest.skip(f"Fashion-MNIST not available: {exc}")
    torch.manual_seed(0)
    model = tnconv.cnn4(10, 1, widths=(16, 32, 32, 32))
    fit(model, train, epochs=4, lr=0.2, progress=False)
    yield model, train, test
    torch.set_num_threads(threads)


def test_retrain_recovers_accuracy(trained):
    model, train, test = trained
    base = evaluate(model, test)["accuracy"]
    small, report = tnconv.truncate_model(model, cut=CUT, keep=0.1)
    before = {k: v.clone() for k, v in small.state_dict().items()}
    hit = evaluate(small, test)["accuracy"]
    assert base > 0.65 and hit < base - 0.3  # hard truncation really hurts

    for keep in (False, True):
        out, curve = tnconv.retrain(small, train, epochs=2, eval_data=test, lr=0.05,
                                    keep_truncation=keep, progress=False)
        acc = [row["accuracy"] for row in curve]
        assert [row["epoch"] for row in curve] == [0, 1, 2]
        assert acc[0] == hit
        assert acc[-1] > hit + 0.25, (keep, acc)  # recovery by a wide margin
        assert evaluate(out, test)["accuracy"] == acc[-1]
        for row in report:  # with keep_truncation the kernels keep their rank
            s = tnconv.spectrum(out.get_submodule(row["layer"]).weight.detach(), CUT)
            tail = float(s[row["rank"]] / s[0]) if row["rank"] < row["full_rank"] else 0.0
            assert (tail < 1e-4) == (keep or row["rank"] == row["full_rank"]), (keep, row)
    # retrain never modifies its input
    assert all(torch.equal(v, before[k]) for k, v in small.state_dict().items())


def test_retrain_arguments(trained):
    model, train, test = trained
    with pytest.raises(ValueError, match="truncation report"):
        tnconv.retrain(model, train, epochs=1, keep_truncation=True, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        tnconv.retrain(model, train, epochs=0, progress=False)


def _synthetic():
    from tnconv.data import ImageDataset

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 16, 16, generator=g), torch.randint(0, 4, (64,), generator=g)
    torch.manual_seed(0)
    return tnconv.cnn4(4, 1, widths=(4, 6, 8, 8)), ImageDataset(x, y, "mnist", "train")


def test_retrain_keeps_every_truncation_applied_to_the_model():
    # truncating one layer, then another on the result: retraining keeps both compressed
    torch.set_num_threads(1)
    model, train = _synthetic()
    cut = "out|in,kh,kw"
    small, _ = tnconv.truncate_model(model, cut=cut, max_bond=1, layers="block2.conv")
    small, _ = tnconv.truncate_model(small, cut=cut, max_bond=1, layers="block3.conv")
    out, _ = tnconv.retrain(small, train, epochs=1, keep_truncation=True, lr=0.5,
                            batch_size=32, progress=False, device="auto")
    for name in ("block2.conv", "block3.conv"):
        s = tnconv.spectrum(out.get_submodule(name).weight.detach(), cut)
        assert float(s[1] / s[0]) < 1e-5, name
    s = tnconv.spectrum(out.block4.conv.weight.detach(), cut)
    assert float(s[1] / s[0]) > 1e-3  # the untruncated layer is free
