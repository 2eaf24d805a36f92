"""Equal norms across the factors of a factorized kernel, the kernel unchanged.

A decomposition leaves the kernel's whole norm in one factor (the MPS's orthogonality centre,
Tucker's core); gradient steps on such factors blow up where the dense kernel's do not (at 30x
PyTorch's default scale, MPS and Tucker layers reached NaN at SGD step 3 where the dense
layer trained). :func:`balance_factors` rescales the factors so that they share the norm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["balance_factors"]


def balance_factors(factors: Sequence[torch.Tensor]) -> list[int]:
    """Give every factor about the same Frobenius norm, in place; their product stays exact.

    Each factor is multiplied by a power of two, ``2**e_k`` with ``sum(e_k) = 0`` and each
    norm within a factor 2 of the geometric mean of the norms, so any contraction of the
    factors (the kernel, every forward path) is unchanged bit for bit. Nothing changes when a
    factor is zero or there is only one.

    Parameters
    ----------
    factors
        The factors (parameters are fine: the update runs under ``no_grad``).

    Returns
    -------
    list of int
        The exponents ``e_k`` applied.

    Examples
    --------
    >>> a, b = torch.full((2, 2), 8.0), torch.full((2, 2), 0.5)
    >>> balance_factors([a, b]), float(a.norm()), float(b.norm())
    ([-2, 2], 4.0, 4.0)
    """
    with torch.no_grad():
        norms = [float(f.detach().double().norm()) for f in factors]
        if len(norms) < 2 or not all(0 < n < math.inf for n in norms):
            return [0] * len(norms)
        logs = [math.log2(n) for n in norms]
        target, done, excess, exps = sum(logs) / len(logs), 0, 0.0, []
        for f, log in zip(factors, logs, strict=True):
            excess += target - log
            e = round(excess) - done  # cumulative rounding: the exponents sum to 0
            done += e
            exps.append(e)
            if e:
                f.mul_(2.0**e)
    return exps
