"""Correlation-compression experiments on whole models.

* :func:`truncate_model` (``model_truncation.py``): truncate the kernels of many layers along
  cuts;
* :func:`sweep` (``sweep.py``): accuracy over layers x cuts x levels, fast and resumable,
  evaluating only what follows the truncated layer (:mod:`tnconv.evaluation.prefix`);
* ``sweep_engine.py``: what the local and the Ray executors share (rows, checks, the row sink
  that resumes files, the loops that compute rows);
* ``sweep(..., executor="ray")`` (``distributed.py``): the same sweep as Ray tasks;
* :func:`spectra_atlas_many` (``atlas_many.py``): the atlas of many models, locally or on Ray,
  compared by ``model_comparison.py``;
* :func:`retrain` (``retrain.py``): the recovery curve, optionally keeping the truncation;
* ``plots.py``, ``report.py``, ``trend.py``, ``rerender.py``: the figures, the findings and
  the Markdown summary, the depth trend, and re-rendering a run folder
  (``python -m tnconv.study.rerender RUN_FOLDER``);
* ``experiment.py``, ``profiles.py``, ``runfolder.py``: the whole study as run by
  ``examples/resnet_cuts.py`` and ``examples/cnn4_cuts.py``, its profiles and its run folder.

Examples
--------
>>> import torch
>>> from tnconv.study import truncate_model
>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3))
>>> small, report = truncate_model(net, cut="out|in,kh,kw", keep=0.5)
>>> [row["rank"] for row in report]
[4, 4]
"""

from __future__ import annotations

from .atlas_many import spectra_atlas_many
from .model_truncation import truncate_model
from .retrain import retrain
from .sweep import sweep

__all__ = ["truncate_model", "sweep", "retrain", "spectra_atlas_many"]
