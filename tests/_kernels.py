"""Synthetic kernels shared by the core tests (fixed seeds)."""

from __future__ import annotations

import torch

#: name -> shape: Conv2d kernels of several sizes, depthwise, grouped, Linear, Conv1d, Conv3d.
SHAPES = {
    "conv1x1": (12, 10, 1, 1),
    "conv3x3": (8, 6, 3, 3),
    "conv5x5": (6, 4, 5, 5),
    "conv7x7": (8, 3, 7, 7),
    "depthwise": (8, 1, 3, 3),
    "grouped": (8, 2, 3, 3),
    "linear": (12, 20),
    "conv1d": (6, 4, 5),
    "conv3d": (4, 3, 3, 3, 3),
}


def make_kernel(name: str, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(SHAPES[name], generator=g, dtype=torch.float64).to(dtype)


def tolerance(dtype: torch.dtype) -> float:
    """Relative round-trip tolerance per dtype (issue: 1e-5 float32, 1e-12 float64)."""
    return 1e-12 if dtype == torch.float64 else 1e-5
