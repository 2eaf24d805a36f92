"""Fingerprints of a sweep: what must match before rows in a results file are reused.

A resumed :func:`tnconv.sweep` skips every row already in its ``out=`` file, so those rows must
come from the same experiment. The fingerprint is a small JSON-able dict: a SHA-256 of the
model's state dict, the data (image count, a SHA-256 of every label and of a fixed sample of the
images; for a dataset or DataLoader, which may shuffle, the label counts and pixel sums), the
cuts, the levels and the criterion. :func:`fingerprint_differences` says in words
what differs between two fingerprints, and :func:`check_resumable` refuses rows of another
sweep.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..checkpoints import update_tensor_hash

__all__ = ["sweep_fingerprint", "fingerprint_differences", "check_resumable", "state_dict_hash",
           "data_hash", "data_fingerprint", "stream_hash", "FINGERPRINT_VERSION"]

#: Version of the fingerprint's layout (a file with another version is not compared).
FINGERPRINT_VERSION = 1
#: Images hashed per data set (evenly spaced, first and last included).
_IMAGE_SAMPLE = 64


def state_dict_hash(model: nn.Module) -> str:
    """SHA-256 of every entry of ``model.state_dict()`` (name, dtype, shape, bytes).

    Examples
    --------
    >>> torch.manual_seed(0) and None
    >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    >>> state_dict_hash(a) == state_dict_hash(a), state_dict_hash(a) == state_dict_hash(b)
    (True, False)
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        update_tensor_hash(h, t, name)
    return h.hexdigest()


def data_hash(images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """``n``, a SHA-256 of all labels (as int64) and one of a fixed sample of the images.

    Examples
    --------
    >>> d = data_hash(torch.zeros(3, 1, 2, 2), torch.tensor([0, 1, 2]))
    >>> d["n"], sorted(d)
    (3, ['images', 'labels', 'n'])
    """
    n = int(labels.shape[0])
    h_labels = hashlib.sha256()
    update_tensor_hash(h_labels, labels.to(torch.int64))
    index = torch.linspace(0, max(n - 1, 0), min(n, _IMAGE_SAMPLE)).round().long()
    h_images = hashlib.sha256()
    update_tensor_hash(h_images, images[index.to(images.device)])
    h_images.update(f"{tuple(images.shape)}".encode())
    return {"n": n, "labels": h_labels.hexdigest(), "images": h_images.hexdigest()}


def stream_hash(data: Any) -> dict[str, Any]:
    """Order-free summary of data read as batches (a dataset or DataLoader, maybe shuffled).

    ``n``, the count of each label and the sum and sum of squares of the pixels (float64,
    8 significant digits, so that the batch order does not matter). A one-shot iterator cannot
    be read twice: it gives ``{"n": None, "stream": "one-shot"}`` (not checked).

    Examples
    --------
    >>> ds = torch.utils.data.TensorDataset(torch.ones(3, 1, 2, 2), torch.tensor([0, 1, 1]))
    >>> stream_hash(ds)["labels"]
    [1, 2]
    """
    from ..data import loaders

    source = loaders.batches(data, 256)
    if source.one_shot:
        return {"n": None, "stream": "one-shot"}
    n, counts, s1, s2 = 0, torch.zeros(0, dtype=torch.int64), 0.0, 0.0
    for x, y in source:
        y = y.to("cpu", torch.int64)
        n += len(y)
        c = torch.bincount(y, minlength=len(counts))
        counts = torch.nn.functional.pad(counts, (0, len(c) - len(counts))) + c
        x = x.detach().to("cpu", torch.float64)
        s1, s2 = s1 + float(x.sum()), s2 + float(x.square().sum())
    return {"n": n, "labels": counts.tolist(), "images": [float(f"{s1:.8g}"), float(f"{s2:.8g}")]}


def data_fingerprint(data: Any) -> dict[str, Any]:
    """:func:`data_hash` of an ImageDataset or tensor pair, else :func:`stream_hash`.

    Examples
    --------
    >>> data_fingerprint((torch.zeros(2, 1, 2, 2), torch.tensor([0, 1])))["n"]
    2
    """
    from ..data import as_tensors, loaders

    if loaders.is_in_memory(data):
        return data_hash(*as_tensors(data))
    return stream_hash(data)


def sweep_fingerprint(model: nn.Module, data: Any, *, cuts: str | Sequence[str],
                      levels: Sequence[float], criterion: str) -> dict[str, Any]:
    """The fingerprint of a sweep of ``model`` on ``data``.

    Cuts are compared without white space and in any order, levels as sorted floats.

    Examples
    --------
    >>> net = torch.nn.Conv2d(1, 2, 3)
    >>> fp = sweep_fingerprint(net, (torch.zeros(2, 1, 4, 4), torch.tensor([0, 1])),
    ...                        cuts=["out | in,kh,kw"], levels=[0.5, 1], criterion="keep")
    >>> fp["cuts"], fp["levels"]
    (['out|in,kh,kw'], [0.5, 1.0])
    """
    return {
        "version": FINGERPRINT_VERSION,
        "model": state_dict_hash(model),
        "data": data_fingerprint(data),
        "cuts": cuts if cuts == "all" else sorted("".join(str(c).split()) for c in cuts),
        "levels": sorted(float(v) for v in levels),
        "criterion": criterion,
    }


def fingerprint_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between a stored fingerprint and this run's, in words (empty: none).

    Examples
    --------
    >>> a = {"version": 1, "model": "ab", "data": {"n": 2}, "cuts": "all", "levels": [1.0],
    ...      "criterion": "keep"}
    >>> fingerprint_differences(a, {**a, "levels": [0.5, 1.0]})
    ['levels ([1.0] in the file, [0.5, 1.0] now)']
    """
    if stored.get("version") != current["version"]:
        return [f"fingerprint version ({stored.get('version')!r} in the file, "
                f"{current['version']} now)"]
    out = []
    if stored.get("model") != current["model"]:
        out.append(f"model weights (state-dict SHA-256 {str(stored.get('model'))[:12]}... in the "
                   f"file, {current['model'][:12]}... now)")
    data, now = stored.get("data") or {}, current["data"]
    if data.get("n") != now["n"]:
        out.append(f"data ({data.get('n')} images in the file, {now['n']} now)")
    elif data != now:
        what = " and ".join(k for k in ("labels", "images") if data.get(k) != now[k])
        out.append(f"data (same count, other {what or 'content'})")
    for key in ("cuts", "levels", "criterion"):
        if stored.get(key) != current[key]:
            out.append(f"{key} ({stored.get(key)!r} in the file, {current[key]!r} now)")
    return out


def check_resumable(rows: Sequence[dict[str, Any]], out: Any, baseline: dict[str, float],
                    mode: str, n_layers: int, *, fingerprint: dict[str, Any],
                    stored: dict[str, Any] | None) -> None:
    """Rows read from ``out`` must come from the same sweep (model, data, cuts, levels, layers).

    Resuming skips every row whose key is already there, so rows of another sweep would be
    silently mixed in. The checks: the fingerprint stored beside the rows (``stored``, from
    ``<out>.meta.json``) equals this run's (files written before fingerprints: a warning), the
    stored baseline accuracy equals this run's (within one image), and in ``mode="all"`` the
    stored rows truncated as many layers as this run does.
    """
    if not rows:
        return
    if stored is None:
        warnings.warn(f"{out} has no fingerprint (written by an older tnconv): resuming after "
                      "checking the baseline accuracy only", stacklevel=3)
    else:
        differ = fingerprint_differences(stored, fingerprint)
        if differ:
            raise ValueError(
                f"{out} holds rows of another sweep; these differ: {'; '.join(differ)}. "
                "Pass another out= or delete the file (and its .meta.json)")
    tol = 1.5 / max(int(baseline.get("n", 1)), 1)
    for r in rows:
        if abs(float(r["baseline_accuracy"]) - baseline["accuracy"]) > tol:
            raise ValueError(
                f"{out} holds rows of another sweep (baseline accuracy "
                f"{float(r['baseline_accuracy']):.4f}, this model and data give "
                f"{baseline['accuracy']:.4f}); pass another out= or delete the file")
        if mode == "all" and r["mode"] == "all" and int(r["n_layers"]) != n_layers:
            raise ValueError(
                f"{out} holds all-layer rows over {int(r['n_layers'])} layers, this sweep "
                f"selects {n_layers}; pass another out= or delete the file")
