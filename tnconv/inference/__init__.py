"""The inference form of a model: plain convolutions on the measured-faster path, batch norm
folded (tier 4: it serves :func:`tnconv.compress`'s timings and the exports above it).

=================  ==============================================================
module             contents
=================  ==============================================================
``deployable.py``  :func:`for_inference`, :class:`InferenceReport`
``fold.py``        :func:`fold_batchnorm`, :func:`conv_bn_pairs` (torch.fx)
``timing.py``      :func:`interleaved_medians`, :func:`interleaved_samples`: the timer
=================  ==============================================================

Examples
--------
>>> import torch, tnconv
>>> fast = tnconv.for_inference(tnconv.cnn4(10, 1).eval(), torch.randn(2, 1, 28, 28))
>>> len(fast.inference_report.folded)
4
"""

from __future__ import annotations

from .deployable import INFERENCE_PATHS, MEMORY_FORMATS, InferenceReport, for_inference
from .fold import conv_bn_pairs, fold_batchnorm
from .timing import interleaved_medians, interleaved_samples

__all__ = ["for_inference", "InferenceReport", "INFERENCE_PATHS", "MEMORY_FORMATS",
           "fold_batchnorm", "conv_bn_pairs", "interleaved_medians", "interleaved_samples"]
