"""Spectra of every layer of a model over many cuts: :func:`spectra_atlas`.

The atlas is the first table of the study: one row per (layer, cut) with the kernel's shape,
the cut's full rank, its entropy, the ranks needed for 1%, 10% and 50% relative error, and
the norm lost when half the singular values are kept.

It is fast because it avoids repeated and wasteful SVDs:

* **equivalent cuts, one SVD**: legs of size 1 do not change a spectrum, so cuts that differ
  only in where the size-1 legs go share one SVD (on a 1x1 kernel the 7 cuts of a Conv2d
  kernel reduce to ``out|in`` and the trivial cuts); a cut with a side of size 1 has the single
  singular value ``||W||`` and needs no SVD at all;
* **tall orientation**: each matrix is decomposed as ``rows >= cols`` (LAPACK and cuSOLVER are
  several times slower on wide matrices);
* **Gram route for float32 matrices** (:func:`tnconv.decomp.svdvals`): ``eigvalsh`` of the
  float64 Gram matrix is several times faster than an SVD and more accurate than a float32 SVD;
* **batching on the GPU**: matrices of the same shape (from layers of the same shape, e.g. the
  repeated bottlenecks of a ResNet) are stacked into one batched call (on the CPU torch's
  batched path is slower than a loop, so :func:`tnconv.decomp.svdvals` loops there);
* **device**: the SVDs run where the kernels live, on the GPU when the model is there.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .cuts import all_cuts, format_cut, parse_cut
from .decomp import norm_loss, rank_for_error, svdvals
from .legs import kernel_legs, validate_kernel
from .model_layers import conv_layers
from .mps import best_chain as find_best_chain
from .network import compute_dtype
from .records import Records
from .spectra import entropy

__all__ = ["spectra_atlas"]


def _kernels(model_or_kernels: Any, include_linear: bool) -> list[tuple[str, torch.Tensor]]:
    obj = model_or_kernels
    if isinstance(obj, nn.Module):
        return [(n, validate_kernel(m.weight, name=f"weight of layer {n!r}").detach())
                for n, m in conv_layers(obj, include_linear=include_linear)]
    if isinstance(obj, torch.Tensor):
        return [("kernel", validate_kernel(obj).detach())]
    if isinstance(obj, Mapping):
        return [(str(k), validate_kernel(v, name=f"kernel {k!r}").detach())
                for k, v in obj.items()]
    if isinstance(obj, Sequence) and not isinstance(obj, str):
        if any(isinstance(v, (str, os.PathLike, nn.Module)) for v in obj):
            raise TypeError("spectra_atlas takes one model; for a list of models, checkpoints "
                            "or model names use tnconv.spectra_atlas_many (one table with a "
                            "'model' column, locally or on Ray)")
        return [(str(i), validate_kernel(v, name=f"kernel {i}").detach())
                for i, v in enumerate(obj)]
    raise TypeError(
        "spectra_atlas takes an nn.Module, a kernel tensor, a mapping name -> kernel or a "
        f"sequence of kernels; got {type(obj).__name__}"
    )


def spectra_atlas(
    model_or_kernels: Any,
    cuts: str | Sequence[str] = "all",
    *,
    include_linear: bool = False,
    dtype: torch.dtype | None = None,
    return_spectra: bool = False,
    best_chain: bool = False,
) -> Records:
    """Spectra of every kernel over a set of cuts, as a table.

    Parameters
    ----------
    model_or_kernels
        An ``nn.Module`` (its conv layers, see :func:`conv_layers`), a kernel, a mapping
        ``name -> kernel`` or a sequence of kernels.
    cuts
        ``"all"`` (every bipartition of each kernel's legs, 7 for Conv2d) or a list of cut
        strings, applied to every kernel.
    include_linear
        Include ``nn.Linear`` layers of a model.
    dtype
        Compute dtype (float32 at least; ``torch.float64`` when asked).
    return_spectra
        Also put the singular values (a CPU tensor) in each row under ``"spectrum"``.
    best_chain
        Also search each layer's best MPS chain at 10% relative error
        (:func:`tnconv.mps.order.best_chain`, a few MPS decompositions per layer: much slower
        than the spectra) and add to every row of the layer ``best_chain``,
        ``best_chain_params``, ``best_chain_compression_ratio``, ``best_chain_error`` and, for
        comparison, ``default_chain_params`` (the default chain ``out|kh|kw|in`` at 10%).

    Returns
    -------
    Records
        One row per (layer, cut) with ``layer``, ``index`` (layer position), ``shape``,
        ``cut``, ``full_rank``, ``entropy`` (bits), ``renyi2``, ``rank_1pct``,
        ``rank_10pct``, ``rank_50pct`` (smallest rank with that relative error),
        ``norm_loss_half`` (norm loss keeping ``ceil(full_rank / 2)`` values),
        ``params``. ``.to_pandas()`` gives a DataFrame.

    Examples
    --------
    >>> import torch, tnconv
    >>> rows = tnconv.spectra_atlas({"a": torch.randn(8, 4, 3, 3)})
    >>> len(rows), rows[0]["cut"]
    (7, 'out|in,kh,kw')
    """
    if not (cuts == "all" or (isinstance(cuts, Sequence) and not isinstance(cuts, str))):
        raise ValueError(f"cuts must be 'all' or a list of cut strings, got {cuts!r}")
    if cuts != "all" and len(cuts) == 0:
        raise ValueError("cuts must not be empty: pass 'all' or a list of cut strings such as "
                         "['out|in,kh,kw']")
    if not isinstance(best_chain, bool):
        raise TypeError(f"best_chain must be True or False, got {best_chain!r}")
    kernels = _kernels(model_or_kernels, include_linear)
    if not kernels:
        raise ValueError("no conv layers (or kernels) found to analyse")
    plan, jobs = _plan(kernels, cuts)
    spectra = _spectra(kernels, jobs, dtype)
    chain_cols = _best_chain_columns(kernels) if best_chain else None
    records = Records()
    for li, cut, key in plan:
        name, w = kernels[li]
        if key is None:  # a side of size 1: the one singular value is ||W||
            s = w.detach().double().norm().to(compute_dtype(w, dtype)).reshape(1)
        else:
            s = spectra[key]
        row = {"layer": name, "index": li, "shape": "x".join(map(str, w.shape)), "cut": cut,
               **_spectrum_row(s), "params": int(w.numel())}
        if return_spectra:
            row["spectrum"] = s.detach().cpu()
        if chain_cols is not None:
            row.update(chain_cols[li])
        records.append(row)
    return records


#: The relative error at which ``spectra_atlas(..., best_chain=True)`` compares chains.
BEST_CHAIN_ERROR = 0.1


def _best_chain_columns(kernels: list[tuple[str, torch.Tensor]]) -> list[dict[str, Any]]:
    """Per layer: its best chain at :data:`BEST_CHAIN_ERROR` and the default chain's size."""
    cols = []
    for _, w in kernels:
        table = find_best_chain(w, max_error=BEST_CHAIN_ERROR)
        top, default = table.rows[0], table.default_row
        cols.append({"best_chain": top["chain"], "best_chain_params": top["num_params"],
                     "best_chain_compression_ratio": top["compression_ratio"],
                     "best_chain_error": top["rel_error"],
                     "default_chain_params": None if default is None else default["num_params"]})
    return cols


_Job = tuple[int, list[int], tuple[int, int]]  # (kernel index, leg permutation, matrix shape)


def _plan(kernels: list[tuple[str, torch.Tensor]], cuts: Any
          ) -> tuple[list[tuple[int, str, Any]], dict[Any, _Job]]:
    """(layer, cut) -> a unique matrix job, or None for the trivial one-value spectrum."""
    jobs: dict[Any, _Job] = {}
    plan: list[tuple[int, str, Any]] = []
    for li, (_, w) in enumerate(kernels):
        legs = kernel_legs(w)
        size = dict(zip(legs, w.shape))
        for cut in all_cuts(legs) if cuts == "all" else list(cuts):
            left, right = parse_cut(cut, legs, max_groups=2)
            nl = [n for n in left if size[n] > 1]
            nr = [n for n in right if size[n] > 1]
            if not nl or not nr:
                plan.append((li, format_cut((left, right)), None))
                continue
            first = next(n for n in legs if size[n] > 1)
            key = (li, frozenset(nl if first in nl else nr))
            if key not in jobs:
                rows, cols = math.prod(size[n] for n in nl), math.prod(size[n] for n in nr)
                if rows < cols:  # the tall orientation
                    nl, nr, rows, cols = nr, nl, cols, rows
                jobs[key] = (li, [legs.index(n) for n in (*nl, *nr)], (rows, cols))
            plan.append((li, format_cut((left, right)), key))
    return plan, jobs


def _spectra(kernels: list[tuple[str, torch.Tensor]], jobs: dict[Any, _Job],
             dtype: torch.dtype | None) -> dict[Any, torch.Tensor]:
    """The singular values of every job, batched by matrix shape, device and dtype."""
    groups: dict[tuple, list] = defaultdict(list)
    for key, (li, _, shape) in jobs.items():
        w = kernels[li][1]
        groups[(shape, w.device, compute_dtype(w, dtype))].append(key)
    spectra: dict[Any, torch.Tensor] = {}
    with torch.no_grad():
        for (shape, _, cdt), keys in groups.items():
            mats = []
            for key in keys:
                li, perm, _ = jobs[key]
                w = kernels[li][1]
                rest = [i for i in range(w.ndim) if i not in perm]  # size-1 legs
                mats.append(w.to(cdt).permute(perm + rest).reshape(shape))
            spectra.update(zip(keys, svdvals(torch.stack(mats))))
    return spectra


def _spectrum_row(s: torch.Tensor) -> dict[str, Any]:
    s = s.detach().cpu()
    n = int(s.numel())
    row: dict[str, Any] = {"full_rank": n, "entropy": float(entropy(s)),
                           "renyi2": float(entropy(s, alpha=2))}
    for pct in (1, 10, 50):
        row[f"rank_{pct}pct"] = max(1, rank_for_error(s, pct / 100))
    row["norm_loss_half"] = norm_loss(s, math.ceil(n / 2))
    return row
