"""The report of :func:`tnconv.compress`: per layer and in total, as a table, dict or JSON.

Sizes use tnconv's one vocabulary (:mod:`tnconv.sizes`): ``params_fraction`` and
``flops_fraction`` are after / before (the fraction kept), ``compression_ratio`` is before /
after (how many times fewer parameters).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..runtime import atomic_write
from ..sizes import LayerSums, Sizes

__all__ = ["LayerResult", "CompressReport"]


@dataclass
class LayerResult(Sizes):
    """One selected layer after compression (with :attr:`params_fraction` and
    :attr:`compression_ratio` of its parameters).

    Attributes
    ----------
    name, method, cut, ranks
        The layer and its factorization (``method="dense"``: left as it was).
    params_before, params_after
        Parameters (weight and bias) of the dense and the chosen layer.
    flops_before, flops_after
        Multiply-adds per image at ``input_size`` (``None`` when unknown).
    rel_error
        Measured relative Frobenius error of the factored kernel (0 for dense).
    predicted_drop
        Predicted single-layer accuracy drop (``allocate="sensitivity"`` only).
    fit
        ``"weights"`` (factors of the kernel) or ``"data"`` (factors of the layer's output
        on data, :mod:`tnconv.compression.datafit`).
    response_error
        ``fit="data"``: relative error of the layer's output on the data (``None`` otherwise).
    """

    name: str
    method: str
    cut: str | None
    ranks: tuple[int, ...]
    params_before: int
    params_after: int
    flops_before: int | None
    flops_after: int | None
    rel_error: float
    predicted_drop: float | None = None
    fit: str = "weights"
    response_error: float | None = None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else (
        format(value, spec))


@dataclass
class CompressReport(LayerSums):
    """What :func:`tnconv.compress` did, and what it measured.

    The totals over the selected layers: :attr:`params_before`, :attr:`params_after`,
    :attr:`params_fraction` (after / before), :attr:`compression_ratio` (before / after) and
    :attr:`flops_fraction` (after / before).

    Attributes
    ----------
    layers
        One :class:`LayerResult` per selected layer, in model order.
    budget_kind, budget
        ``"params"``, ``"flops"`` or ``"max_error"``, and the value asked.
    method, allocate
        As passed.
    fit
        ``"weights"`` or ``"data"`` (what ``fit="auto"`` resolved to).
    input_size
        ``(C, H, W)`` of FLOP counts and timings (``None`` when unknown).
    accuracy_dense, accuracy_compressed, accuracy_finetuned
        Accuracy on ``data`` of the original model, of the compressed one before and after
        fine-tuning (``None`` where not measured).
    predicted_drop, uniform_predicted_drop
        ``allocate="sensitivity"``: the accuracy drop on ``data`` (the sensitivity data) of
        the kept allocation and of the uniform one, both measured.
    latency_dense_s, latency_compressed_s, latency_batch
        Median seconds of one forward pass of a batch of ``latency_batch`` at ``input_size``
        of the dense and the compressed model's *inference forms*
        (:func:`tnconv.for_inference`: what is deployed, batch norm folded), timed in
        interleaved rounds (``None``: not measured).
    latency_budget, latency_search
        ``compress(..., latency=f)``: the budget ``f`` (``None`` otherwise), and every FLOPs
        fraction tried (``fraction``, ``dense_s``, ``compressed_s``, ``ratio``; the kept one
        is the largest with ``ratio <= f``, whose times are the latencies above).
    rank_multiple
        Every rank a multiple of this (each leg's full rank aside).
    skipped
        Selected convolutions that cannot be factored (grouped, or with their own forward),
        left dense and counted at full size.
    notes
        What else the run decided (data used for fine-tuning, ...).
    candidates
        ``allocate="sensitivity"``: every allocation evaluated (``label``, ``accuracy`` and
        ``loss`` on ``data``, ``latency_s``), the kept one first.
    """

    layers: list[LayerResult] = field(default_factory=list)
    budget_kind: str = "params"
    budget: float = 1.0
    method: str = "auto"
    allocate: str = "sensitivity"
    fit: str = "weights"
    input_size: tuple[int, ...] | None = None
    accuracy_dense: float | None = None
    accuracy_compressed: float | None = None
    accuracy_finetuned: float | None = None
    predicted_drop: float | None = None
    uniform_predicted_drop: float | None = None
    latency_dense_s: float | None = None
    latency_compressed_s: float | None = None
    latency_batch: int = 256
    latency_budget: float | None = None
    latency_search: list[dict[str, float]] = field(default_factory=list)
    rank_multiple: int = 1
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)


    @property
    def flops_fraction(self) -> float | None:
        """Achieved fraction (after / before) of the selected layers' multiply-adds (``None``
        when unknown).

        Examples
        --------
        >>> r = CompressReport([LayerResult("0", "svd", "out|in,kh,kw", (2,), 64, 16, 640, 160,
        ...                                 0.5)])
        >>> r.params_fraction, r.compression_ratio, r.flops_fraction
        (0.25, 4.0, 0.25)
        """
        if any(r.flops_before is None or r.flops_after is None for r in self.layers):
            return None
        before = sum(r.flops_before for r in self.layers)  # type: ignore[misc]
        if not before:
            return None
        return sum(r.flops_after for r in self.layers) / before  # type: ignore[misc]

    @property
    def latency_ratio(self) -> float | None:
        """``latency_compressed_s / latency_dense_s`` (below 1: faster)."""
        if not self.latency_dense_s or self.latency_compressed_s is None:
            return None
        return self.latency_compressed_s / self.latency_dense_s

    def to_dict(self) -> dict[str, Any]:
        """Everything, as plain Python types (the totals included).

        Examples
        --------
        >>> r = CompressReport([LayerResult("0", "svd", "out|in,kh,kw", (2,), 64, 32, None,
        ...                                 None, 0.5)], budget=0.5)
        >>> r.to_dict()["params_fraction"]
        0.5
        """
        out = asdict(self)
        out["layers"] = [{**asdict(r), "ranks": list(r.ranks)} for r in self.layers]
        out["input_size"] = list(self.input_size) if self.input_size else None
        out.update(params_before=self.params_before, params_after=self.params_after,
                   params_fraction=self.params_fraction, flops_fraction=self.flops_fraction,
                   compression_ratio=self.compression_ratio, latency_ratio=self.latency_ratio)
        return out

    def to_pandas(self) -> Any:
        """The per-layer table as a ``pandas.DataFrame``."""
        import pandas as pd

        return pd.DataFrame([{**asdict(r), "ranks": "x".join(map(str, r.ranks))}
                             for r in self.layers])

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON (atomically); return the path."""
        text = json.dumps(self.to_dict(), indent=2, default=str).encode()
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(Path(path).expanduser(), lambda fh: fh.write(text))

    def __str__(self) -> str:
        head = (f"{'layer':<24} {'method':<7} {'fit':<7} {'cut':<14} {'ranks':<11} {'params':>17} "
                f"{'MFLOPs':>15} {'error':>6} {'drop':>6}")
        lines = [head, "-" * len(head)]
        for r in self.layers:
            fl = (f"{r.flops_before / 1e6:.2f}>{r.flops_after / 1e6:.2f}"
                  if r.flops_before is not None and r.flops_after is not None else "-")
            fit = "-" if r.method == "dense" else r.fit
            lines.append(f"{r.name:<24} {r.method:<7} {fit:<7} {r.cut or '-':<14} "
                         f"{'x'.join(map(str, r.ranks)) or '-':<11} "
                         f"{f'{r.params_before}>{r.params_after}':>17} {fl:>15} "
                         f"{r.rel_error:>6.3f} {_fmt(r.predicted_drop, '6.3f'):>6}")
        lines.append("-" * len(head))
        flops = self.flops_fraction
        lines.append(f"budget {self.budget_kind}={self.budget:g} ({self.method}, "
                     f"{self.allocate}): params {self.params_before} -> {self.params_after} "
                     f"({self.params_fraction:.4f}, {self.compression_ratio:.2f}x fewer)"
                     + (f", FLOPs fraction {flops:.4f}" if flops is not None else ""))
        lines.append(f"accuracy dense {_fmt(self.accuracy_dense, '.4f')}, compressed "
                     f"{_fmt(self.accuracy_compressed, '.4f')}, fine-tuned "
                     f"{_fmt(self.accuracy_finetuned, '.4f')}")
        if self.latency_dense_s is not None:
            lines.append(f"latency (inference forms, batch {self.latency_batch}) dense "
                         f"{self.latency_dense_s * 1e3:.1f} ms, compressed "
                         f"{_fmt((self.latency_compressed_s or 0) * 1e3, '.1f')} ms, ratio "
                         f"{_fmt(self.latency_ratio, '.3f')}"
                         + (f" (budget {self.latency_budget:g})"
                            if self.latency_budget is not None else ""))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)
