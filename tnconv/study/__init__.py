"""Correlation-compression experiments on whole models.

* :func:`truncate_model` (``truncation.py``): truncate the kernels of many layers along cuts;
* :func:`sweep` (``sweep.py``): accuracy over layers x cuts x levels, fast and resumable,
  evaluating only what follows the truncated layer (``prefix.py``);
* ``sweep(..., executor="ray")`` (``distributed.py``): the same sweep as Ray tasks;
* :func:`spectra_atlas_many` (``atlas_many.py``): the atlas of many models, locally or on Ray,
  compared by ``model_comparison.py``;
* :func:`retrain` (``retrain.py``): the recovery curve, optionally keeping the truncation;
* ``plots.py``, ``report.py``, ``experiment.py``: the figures, the Markdown summary and the
  whole study as run by ``examples/resnet_cuts.py`` and ``examples/cnn4_cuts.py``.
"""

from __future__ import annotations

from .atlas_many import spectra_atlas_many
from .model_truncation import truncate_model
from .retrain import retrain
from .sweep import sweep

__all__ = ["truncate_model", "sweep", "retrain", "spectra_atlas_many"]
