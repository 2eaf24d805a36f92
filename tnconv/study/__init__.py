"""Correlation-compression experiments on whole models.

* :func:`truncate_model` (``truncation.py``): truncate the kernels of many layers along cuts;
* :func:`sweep` (``sweep.py``): accuracy over layers x cuts x levels, fast and resumable,
  evaluating only what follows the truncated layer (``prefix.py``);
* :func:`retrain` (``retrain.py``): the recovery curve, optionally keeping the truncation;
* ``plots.py``, ``report.py``, ``experiment.py``: the figures, the Markdown summary and the
  whole study as run by ``examples/resnet_cuts.py`` and ``examples/cnn4_cuts.py``.
"""

from __future__ import annotations

from .model_truncation import truncate_model
from .retrain import retrain
from .sweep import sweep

__all__ = ["truncate_model", "sweep", "retrain"]
