"""Compression of a whole model to a budget: ``tnconv.compress`` and what it is made of.

=================  =================================================================
module             contents
=================  =================================================================
``api.py``         :func:`compress`
``families.py``    per-kernel families (svd cuts, Tucker-2, MPS, CP): params, FLOPs, error
``candidates.py``  :class:`LayerChoices`, the ``method=`` registry :data:`METHODS`,
                   the layer an option makes
``datafit.py``     the cut ``out|in,kh,kw`` fitted to a layer's outputs on data (PCA);
                   the ``fit=`` registry :data:`FITS`
``allocate.py``    uniform / energy / vbmf / knapsack allocation of a budget
``sensitivity.py`` measured single-layer drops of probe options, whole-allocation checks
``choose.py``      the ``allocate=`` registry :data:`ALLOCATIONS`; ``"sensitivity"``:
                   candidate allocations, the best measured kept
``latency.py``     :func:`measure_latency`, :func:`measure_latencies`: timing the inference
                   forms; the latency budget's search (:func:`~.latency.meet_latency`)
``summary.py``     :class:`CompressReport`
``storage.py``     :func:`save_compressed` / :func:`load_compressed` (checkpoints + report)
=================  =================================================================

:func:`evbmf` (empirical VBMF ranks, Nakajima et al. 2013) is an array-level routine of the
core, :mod:`tnconv.vbmf`, re-exported here.

Examples
--------
>>> from tnconv.compression import ALLOCATIONS, FITS, METHODS
>>> list(METHODS), list(ALLOCATIONS), list(FITS)  # doctest: +NORMALIZE_WHITESPACE
(['auto', 'svd', 'tucker', 'mps', 'cp'], ['uniform', 'energy', 'vbmf', 'sensitivity'],
 ['auto', 'weights', 'data'])
"""

from __future__ import annotations

from ..vbmf import EVBMFResult, evbmf
from .api import compress
from .candidates import METHODS
from .choose import ALLOCATIONS
from .datafit import FITS
from .latency import measure_latencies, measure_latency
from .storage import load_compressed, save_compressed
from .summary import CompressReport, LayerResult

__all__ = ["compress", "measure_latency", "measure_latencies", "evbmf", "EVBMFResult",
           "CompressReport", "LayerResult", "save_compressed", "load_compressed", "METHODS",
           "ALLOCATIONS", "FITS"]
