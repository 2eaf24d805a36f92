"""Checkpoint checksums (metadata, dtype and shape of every tensor) and the prefix cache's
size estimate (all images, not one batch): the tests that kill mutants of
benchmarks/mutation_check.py.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tnconv.checkpoints import load_checkpoint, save_checkpoint
from tnconv.evaluation.prefix import PrefixRunner
from tnconv.models import cnn4

_META = {"model": "cnn4", "model_kwargs": {"widths": [4, 4, 4, 4]}, "accuracy": 0.5}


@pytest.fixture
def saved(tmp_path):
    """A small cnn4 checkpoint and its payload as ``torch.load`` reads it."""
    torch.manual_seed(0)
    path = save_checkpoint(cnn4(10, 1, widths=(4, 4, 4, 4)), tmp_path / "c.pt", meta=_META)
    return path, torch.load(path, weights_only=True)


def _resave(payload, path):
    torch.save(payload, path)  # the stored sha256 is kept: only what it covers decides
    return path


def test_checkpoint_checksum_covers_the_metadata(saved, tmp_path):
    path, payload = saved
    assert load_checkpoint(path)[1]["accuracy"] == 0.5  # the untouched file loads
    payload["meta"]["accuracy"] = 0.99
    with pytest.raises(ValueError, match="corrupt.*checksum"):
        load_checkpoint(_resave(payload, tmp_path / "edited-accuracy.pt"))


def test_checkpoint_checksum_covers_dtype(saved, tmp_path):
    # the same bytes read as int32: load_state_dict would copy them into the float weights
    path, payload = saved
    key = "classifier.fc.weight"
    payload["state_dict"][key] = payload["state_dict"][key].view(torch.int32)
    with pytest.raises(ValueError, match="corrupt.*checksum"):
        load_checkpoint(_resave(payload, tmp_path / "int32.pt"))


@pytest.mark.parametrize("key, shape", [("classifier.fc.weight", (-1,)),
                                        ("block1.bn.num_batches_tracked", (1,))])
def test_checkpoint_checksum_covers_shape(saved, tmp_path, key, shape):
    # same bytes, another shape (a (1,) tensor even loads into a 0-dim buffer without error)
    path, payload = saved
    assert key in payload["state_dict"], sorted(payload["state_dict"])
    payload["state_dict"][key] = payload["state_dict"][key].reshape(shape)
    with pytest.raises(ValueError, match="corrupt.*checksum"):
        load_checkpoint(_resave(payload, tmp_path / "reshaped.pt"))


def _runner(cache_bytes):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 3)).eval()
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(80, 1, 6, 6, generator=g), torch.randint(0, 3, (80,), generator=g))
    return PrefixRunner(model, data, batch_size=32, cache_bytes=cache_bytes)


def test_prefix_cache_size_counts_all_images():
    # the input of stage 1 (ReLU): 4 x 6 x 6 float32 per image, 80 images in batches of 32
    per_image = 4 * 6 * 6 * 4
    one_batch, everything = 32 * per_image, 80 * per_image
    run = _runner(None)
    assert run.mode == "prefix"
    assert run.cache_size(1) == everything
    # a limit above one batch's activations but below all images' must refuse the cache
    run = _runner(2 * one_batch)
    assert not run.advance(1)
    assert run.evaluate_from(1) == run.evaluate()
    run = _runner(everything)
    assert run.advance(1)
    assert run.evaluate_from(1) == run.evaluate()
