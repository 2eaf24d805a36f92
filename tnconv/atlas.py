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
* **Gram route for tall float32 matrices**: ``eigvalsh`` of the float64 Gram matrix is several
  times faster than an SVD and, in float64, at least as accurate as a float32 SVD;
* **batching on the GPU**: matrices of the same shape (from layers of the same shape, e.g. the
  repeated bottlenecks of a ResNet) are stacked into one batched call (on the CPU torch's
  batched path is slower than a loop, so there it loops);
* **device**: the SVDs run where the kernels live, on the GPU when the model is there.
"""

from __future__ import annotations

import fnmatch
import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .cuts import all_cuts, format_cut, parse_cut
from .legs import kernel_legs, validate_kernel
from .network import compute_dtype
from .spectra import entropy, tail_errors

__all__ = ["conv_layers", "select_layers", "LayerSpec", "spectra_atlas", "Records"]

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class Records(list):
    """A list of row dicts that converts to a pandas DataFrame.

    Examples
    --------
    >>> Records([{"a": 1}, {"a": 2}]).to_pandas().shape
    (2, 1)
    """

    def to_pandas(self) -> Any:
        """The rows as a ``pandas.DataFrame`` (pandas imported on demand)."""
        import pandas as pd

        return pd.DataFrame(list(self))

    def to_csv(self, path: Any) -> None:
        """Write the rows to a CSV file."""
        self.to_pandas().to_csv(path, index=False)


def conv_layers(
    model: nn.Module, *, include_linear: bool = False
) -> Iterator[tuple[str, nn.Module]]:
    """The convolution (and optionally linear) layers of any torch model.

    Parameters
    ----------
    model
        Any ``nn.Module``.
    include_linear
        Also yield ``nn.Linear`` layers.

    Yields
    ------
    (name, module)
        In ``model.named_modules()`` order, for ``nn.Conv1d``, ``nn.Conv2d``, ``nn.Conv3d``
        (transposed convolutions are skipped: their weight layout is ``[in, out, ...]``).

    Examples
    --------
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    >>> [n for n, _ in conv_layers(m, include_linear=True)]
    ['0', '3']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    types = (*_CONV_TYPES, nn.Linear) if include_linear else _CONV_TYPES
    for name, module in model.named_modules():
        if isinstance(module, types):
            yield name, module


#: What ``layers=`` accepts everywhere in tnconv: ``None`` (every candidate), a name or
#: ``fnmatch`` pattern, a sequence of them, or a predicate ``(name, module) -> bool``.
LayerSpec = None | str | Sequence[str] | Callable[[str, nn.Module], bool]


def _match(name: str, pattern: str) -> bool:
    return name == pattern or fnmatch.fnmatchcase(name, pattern)


def select_layers(
    model: nn.Module,
    layers: LayerSpec = None,
    *,
    include_linear: bool = False,
    types: tuple[type[nn.Module], ...] | None = None,
) -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs of :func:`conv_layers` chosen by ``layers``.

    The one layer selection of tnconv (:func:`tnconv.truncate_model`, :func:`tnconv.sweep`,
    :func:`tnconv.tensorize`).

    Parameters
    ----------
    model
        Any ``nn.Module``.
    layers
        ``None`` (every candidate), an exact name or ``fnmatch`` pattern (``"layer4.*"``), a
        sequence of them, or a predicate ``(name, module) -> bool``.
    include_linear
        ``nn.Linear`` layers are candidates too.
    types
        Only modules of these types are candidates (e.g. ``(nn.Conv2d,)``).

    Raises
    ------
    TypeError
        ``layers`` of another kind, or a pattern that is not a str.
    ValueError
        A pattern that matches no candidate (the message lists the candidates), or no layer
        selected at all.

    Examples
    --------
    >>> m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3))
    >>> [n for n, _ in select_layers(m, "1")], [n for n, _ in select_layers(m, ["*"])]
    (['1'], ['0', '1'])
    """
    candidates = [(n, m) for n, m in conv_layers(model, include_linear=include_linear)
                  if getattr(m, "weight", None) is not None
                  and (types is None or isinstance(m, types))]
    names = [n for n, _ in candidates]
    what = "layer" if types is None else " or ".join(f"nn.{t.__name__}" for t in types)
    listing = f"; the candidates are: {', '.join(names) or '(none)'}" + (
        "" if include_linear or types is not None else " (Linear layers need include_linear=True)")
    if layers is None:
        chosen = candidates
    elif callable(layers):
        chosen = [(n, m) for n, m in candidates if layers(n, m)]
    else:
        patterns = [layers] if isinstance(layers, str) else layers
        if not isinstance(patterns, Sequence) or not all(isinstance(p, str) for p in patterns):
            raise TypeError("layers must be None, a name pattern, a sequence of name patterns or "
                            f"a predicate (name, module) -> bool, got {layers!r}")
        for p in patterns:
            if not any(_match(n, p) for n in names):
                raise ValueError(f"layer pattern {p!r} matches no {what}{listing}")
        chosen = [(n, m) for n, m in candidates if any(_match(n, p) for p in patterns)]
    if not chosen:
        raise ValueError(f"no {what} selected by layers={layers!r}{listing}")
    return chosen


def _kernels(model_or_kernels: Any, include_linear: bool) -> list[tuple[str, torch.Tensor]]:
    obj = model_or_kernels
    if isinstance(obj, nn.Module):
        return [(n, m.weight.detach()) for n, m in conv_layers(obj, include_linear=include_linear)]
    if isinstance(obj, torch.Tensor):
        return [("kernel", validate_kernel(obj).detach())]
    if isinstance(obj, Mapping):
        return [(str(k), validate_kernel(v, name=f"kernel {k!r}").detach())
                for k, v in obj.items()]
    if isinstance(obj, Sequence) and not isinstance(obj, str):
        return [(str(i), validate_kernel(v, name=f"kernel {i}").detach())
                for i, v in enumerate(obj)]
    raise TypeError(
        "spectra_atlas takes an nn.Module, a kernel tensor, a mapping name -> kernel or a "
        f"sequence of kernels; got {type(obj).__name__}"
    )


def _svdvals(m: torch.Tensor) -> torch.Tensor:
    rows, cols = m.shape[-2:]
    if m.dtype == torch.float32 and rows >= 2 * cols:
        m64 = m.double()
        ev = torch.linalg.eigvalsh(m64.mT @ m64)
        return ev.clamp_min(0).sqrt().flip(-1).to(m.dtype)
    return torch.linalg.svdvals(m)


def _svdvals_batch(mats: torch.Tensor) -> torch.Tensor:
    """Singular values of a stack of tall matrices.

    Clearly tall float32 matrices go through the float64 Gram matrix and ``eigvalsh``: several
    times faster than an SVD and, in float64, accurate to about ``1e-8 * s_max`` -- better than
    a float32 SVD. float64 input keeps the SVD (no loss of small singular values). On the GPU
    the stack is one batched call; on the CPU, torch's batched LAPACK path is much slower than
    a loop (measured: 6 SVDs of 2304x256 took 58 s batched, 1.3 s looped), so it loops.
    """
    if mats.device.type == "cpu":
        return torch.stack([_svdvals(m) for m in mats])
    return _svdvals(mats)


def _norm_loss(s: torch.Tensor, rank: int) -> float:
    sq = s.detach().double().cpu() ** 2
    total = float(sq.sum())
    return 1.0 - math.sqrt(float(sq[:rank].sum()) / total) if total > 0 else 0.0


def _rank_at(err: torch.Tensor, target: float) -> int:
    ok = torch.nonzero(err <= target * (1 + 1e-12))
    return max(1, int(ok[0, 0])) if ok.numel() else int(err.numel() - 1)


def spectra_atlas(
    model_or_kernels: Any,
    cuts: str | Sequence[str] = "all",
    *,
    include_linear: bool = False,
    dtype: torch.dtype | None = None,
    return_spectra: bool = False,
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
    kernels = _kernels(model_or_kernels, include_linear)
    if not kernels:
        raise ValueError("no conv layers (or kernels) found to analyse")
    if not (cuts == "all" or (isinstance(cuts, Sequence) and not isinstance(cuts, str))):
        raise ValueError(f"cuts must be 'all' or a list of cut strings, got {cuts!r}")

    # plan: (layer, cut) -> a unique matrix job, or the trivial one-value spectrum
    jobs: dict[tuple[int, frozenset], tuple[int, list[int], tuple[int, int]]] = {}
    plan: list[tuple[int, str, Any]] = []
    for li, (_, w) in enumerate(kernels):
        legs = kernel_legs(w)
        size = dict(zip(legs, w.shape))
        layer_cuts = all_cuts(legs) if cuts == "all" else list(cuts)
        for cut in layer_cuts:
            left, right = parse_cut(cut, legs, max_groups=2)
            nl = [n for n in left if size[n] > 1]
            nr = [n for n in right if size[n] > 1]
            if not nl or not nr:
                plan.append((li, format_cut((left, right)), None))
                continue
            first = next(n for n in legs if size[n] > 1)
            key = (li, frozenset(nl if first in nl else nr))
            if key not in jobs:
                rows = math.prod(size[n] for n in nl)
                cols = math.prod(size[n] for n in nr)
                perm = [legs.index(n) for n in (*nl, *nr)]
                if rows < cols:
                    perm = [legs.index(n) for n in (*nr, *nl)]
                    rows, cols = cols, rows
                jobs[key] = (li, perm, (rows, cols))
            plan.append((li, format_cut((left, right)), key))

    # batch the unique jobs by matrix shape and device
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
            s = _svdvals_batch(torch.stack(mats))
            for key, row in zip(keys, s):
                spectra[key] = row

    records = Records()
    for li, cut, key in plan:
        name, w = kernels[li]
        if key is None:
            s = w.detach().to(compute_dtype(w, dtype)).norm().reshape(1)
        else:
            s = spectra[key]
        err = tail_errors(s).cpu()
        n = int(s.numel())
        half = math.ceil(n / 2)
        row = {
            "layer": name,
            "index": li,
            "shape": "x".join(map(str, w.shape)),
            "cut": cut,
            "full_rank": n,
            "entropy": float(entropy(s)),
            "renyi2": float(entropy(s, alpha=2)),
            "rank_1pct": _rank_at(err, 0.01),
            "rank_10pct": _rank_at(err, 0.10),
            "rank_50pct": _rank_at(err, 0.50),
            "norm_loss_half": _norm_loss(s, half),
            "params": int(w.numel()),
        }
        if return_spectra:
            row["spectrum"] = s.detach().cpu()
        records.append(row)
    return records
