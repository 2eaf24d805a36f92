"""Timing calls in interleaved rounds, the one timer of the inference forms and of compress.

:func:`interleaved_medians` runs every call once per round, after warm-up rounds, and keeps
each call's median: a change of the machine's load during the measurement affects every
candidate alike, so their *ratio* is what the timings are good for. Calls too short for the
clock (a small layer at batch 1: microseconds) are repeated within a sample so that a sample
of the slowest lasts about ``min_sample_s``.

Examples
--------
>>> import torch
>>> x = torch.randn(8, 64)
>>> fast, slow = interleaved_medians([lambda: x.sum(), lambda: x @ x.T @ x], repeats=3)
>>> fast > 0 and slow > 0
True
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["interleaved_medians", "interleaved_samples"]


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(calls: Sequence[Callable[[], Any]], *, repeats: int = 5,
                        warmup: int = 2, device: torch.device | None = None,
                        min_sample_s: float = 0.0) -> list[float]:
    """Median seconds of one run of each call, timed in interleaved rounds.

    The medians of :func:`interleaved_samples` (same parameters).

    Examples
    --------
    >>> interleaved_medians([lambda: None], repeats=1, warmup=0)[0] >= 0
    True
    """
    samples = interleaved_samples(calls, repeats=repeats, warmup=warmup, device=device,
                                  min_sample_s=min_sample_s)
    return [statistics.median(s) for s in samples]


def interleaved_samples(calls: Sequence[Callable[[], Any]], *, repeats: int = 5,
                        warmup: int = 2, device: torch.device | None = None,
                        min_sample_s: float = 0.0) -> list[list[float]]:
    """Seconds of one run of each call in every counted round, timed in interleaved rounds.

    Round ``k`` of every call ran at about the same time, so ``a[k] / b[k]`` is a *paired*
    ratio: its median is steadier under a changing load than the ratio of the medians.

    Parameters
    ----------
    calls
        Functions of no argument (a forward pass on a fixed input, say).
    repeats, warmup
        Counted rounds, and rounds run first and not counted (at least 1 and 0).
    device
        CUDA devices are synchronised around every sample.
    min_sample_s
        Each sample repeats its call ``k`` times (the same ``k`` for every call, from the
        warm-up) so that a sample of the slowest call lasts at least this long; the time of
        one run is the sample over ``k``. 0: one run per sample.

    Returns
    -------
    list of list of float
        Per call, ``repeats`` samples in seconds (round order).

    Examples
    --------
    >>> [len(s) for s in interleaved_samples([lambda: None] * 2, repeats=3, warmup=1)]
    [3, 3]
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    times: list[list[float]] = [[] for _ in calls]
    inner = 1
    for k in range(warmup + repeats):
        for call, store in zip(calls, times, strict=True):
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(inner):
                call()
            _sync(device)
            store.append((time.perf_counter() - t0) / inner)
        if k == max(warmup - 1, 0) and min_sample_s > 0 and k < warmup + repeats - 1:
            slowest = max(s[-1] for s in times) if times else 0.0
            inner = max(1, min(1000, int(min_sample_s / max(slowest, 1e-9)) + 1))
    return [s[warmup:] for s in times]
