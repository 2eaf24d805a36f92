"""Compression of a whole model to a budget: ``tnconv.compress`` and what it is made of.

=================  =================================================================
module             contents
=================  =================================================================
``api.py``         :func:`compress`, :func:`measure_latency`, :func:`measure_latencies`
``evbmf.py``       :func:`evbmf`: empirical VBMF ranks (Nakajima et al. 2013)
``candidates.py``  per-layer families (svd cuts, Tucker-2, MPS, CP): params, FLOPs, error
``datafit.py``     the cut ``out|in,kh,kw`` fitted to a layer's outputs on data (PCA)
``allocate.py``    uniform / energy / vbmf / knapsack allocation of a budget
``sensitivity.py`` measured single-layer drops of probe options, whole-allocation checks
``choose.py``      ``allocate="sensitivity"``: candidate allocations, the best measured kept
``summary.py``     :class:`CompressReport`
``storage.py``     :func:`save_compressed` / :func:`load_compressed` (checkpoints + report)
=================  =================================================================
"""

from __future__ import annotations

from .allocate import ALLOCATIONS
from .api import compress, measure_latencies, measure_latency
from .candidates import FITS, METHODS
from .evbmf import EVBMFResult, evbmf
from .storage import load_compressed, save_compressed
from .summary import CompressReport, LayerResult

__all__ = ["compress", "measure_latency", "measure_latencies", "evbmf", "EVBMFResult",
           "CompressReport", "LayerResult", "save_compressed", "load_compressed", "METHODS",
           "ALLOCATIONS", "FITS"]
