"""Knowledge distillation: a student trained against a teacher's logits (Hinton et al. 2015).

The loss of :func:`tnconv.fit` with a ``teacher=`` is :func:`distillation_loss`: the
Kullback-Leibler divergence of the student's temperature-softened distribution from the
teacher's, scaled by ``T**2`` so that its gradients keep their size as ``T`` changes, mixed with
the cross-entropy on the labels::

    loss = distill * T**2 * KL(softmax(t / T) || softmax(s / T)) + (1 - distill) * CE(s, y)

A compressed model is the natural student of the dense model it came from
(``tnconv.compress(..., epochs=k, finetune={"distill": 1.0, "temperature": 4})``): the teacher
gives every class a target, not only the labelled one.

Examples
--------
>>> import torch
>>> s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.tensor([0, 1, 2, 3])
>>> float(distillation_loss(t, t, y, distill=1.0)) < 1e-6  # a student equal to its teacher
True
>>> check_distillation(0.5, 4.0)
(0.5, 4.0)
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["distillation_loss", "check_distillation", "check_teacher", "DISTILL_DEFAULTS"]

#: ``distill`` (the weight of the teacher's term) and ``temperature`` when a teacher is given.
DISTILL_DEFAULTS: dict[str, float] = {"distill": 1.0, "temperature": 4.0}


def check_distillation(distill: Any, temperature: Any) -> tuple[float, float]:
    """``(distill, temperature)`` as floats; one-line errors naming the bad one.

    Parameters
    ----------
    distill
        The weight of the teacher's term, in [0, 1] (``None``: 1.0).
    temperature
        The softening temperature, > 0 (``None``: 4.0).

    Returns
    -------
    (float, float)

    Examples
    --------
    >>> check_distillation(None, None)
    (1.0, 4.0)
    """
    values = []
    for name, value in (("distill", distill), ("temperature", temperature)):
        value = DISTILL_DEFAULTS[name] if value is None else value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a real number, got {type(value).__name__} "
                            f"{value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
        values.append(float(value))
    if not 0.0 <= values[0] <= 1.0:
        raise ValueError(f"distill must be in [0, 1] (the weight of the teacher's term), got "
                         f"{values[0]}")
    if not values[1] > 0:
        raise ValueError(f"temperature must be > 0, got {values[1]}")
    return values[0], values[1]


def check_teacher(teacher: Any, distill: Any, temperature: Any) -> tuple[float, float] | None:
    """The checked ``(distill, temperature)`` of a teacher, or ``None`` without one.

    Parameters
    ----------
    teacher
        ``None`` or an ``nn.Module``.
    distill, temperature
        As :func:`check_distillation`; given without a teacher they are an error (never
        silently ignored).

    Examples
    --------
    >>> import torch
    >>> check_teacher(None, None, None) is None, check_teacher(torch.nn.Linear(2, 2), 0.5, None)
    (True, (0.5, 4.0))
    """
    if teacher is None:
        if distill is not None or temperature is not None:
            raise ValueError("distill= and temperature= need teacher= (the model whose logits "
                             "the student learns from)")
        return None
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
    return check_distillation(distill, temperature)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, *,
                      distill: float = 1.0, temperature: float = 4.0,
                      label_smoothing: float = 0.0) -> torch.Tensor:
    """The distillation loss of a batch (mean over it).

    Parameters
    ----------
    student, teacher
        Logits ``[N, classes]``; the teacher's are not differentiated.
    labels
        ``[N]`` class indices.
    distill, temperature
        As :func:`check_distillation` (not re-checked here: the caller checks once).
    label_smoothing
        Of the cross-entropy term.

    Returns
    -------
    torch.Tensor
        A scalar, float32 or wider.

    Examples
    --------
    >>> import torch
    >>> s = torch.randn(2, 3, requires_grad=True)
    >>> distillation_loss(s, torch.randn(2, 3), torch.tensor([0, 2]), distill=0.5).shape
    torch.Size([])
    """
    s = student.float()
    loss = s.new_zeros(())
    if distill > 0:
        t = temperature
        log_p = F.log_softmax(s / t, dim=1)
        log_q = F.log_softmax(teacher.detach().float() / t, dim=1)
        loss = loss + distill * t * t * F.kl_div(log_p, log_q, log_target=True,
                                                 reduction="batchmean")
    if distill < 1:
        loss = loss + (1 - distill) * F.cross_entropy(s, labels,
                                                      label_smoothing=label_smoothing)
    return loss
