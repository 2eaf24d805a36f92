"""Evaluating a model again and again as its layers change: what the study and compression share.

::

    prefix.py        PrefixRunner: re-run only the stages after a changed layer, from cached
                     activations (bit-identical to the full forward pass)
    fingerprint.py   hashes of a model's weights and of data; what must match before stored
                     rows or probes are reused

Both :mod:`tnconv.study` (sweeps) and :mod:`tnconv.compression` (sensitivity probes) import
this package; neither imports the other.

Examples
--------
>>> import torch
>>> from tnconv.evaluation import PrefixRunner
>>> m = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(),
...                         torch.nn.Linear(8, 3)).eval()
>>> PrefixRunner(m, (torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])), device="cpu").mode
'prefix'
"""

from __future__ import annotations

from .fingerprint import data_fingerprint, state_dict_hash, sweep_fingerprint
from .prefix import PrefixRunner, default_cache_bytes, model_stages

__all__ = ["PrefixRunner", "data_fingerprint", "default_cache_bytes", "model_stages",
           "state_dict_hash", "sweep_fingerprint"]
