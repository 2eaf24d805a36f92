"""Distillation in tnconv.fit: the student moves toward the teacher, the teacher is untouched,
bad settings are refused."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tnconv
from tnconv.distillation import distillation_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)


def _kl(student: nn.Module, teacher: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.kl_div(F.log_softmax(student(x), 1), F.log_softmax(teacher(x), 1),
                              log_target=True, reduction="batchmean"))


def test_student_learns_the_teacher_and_the_teacher_is_untouched() -> None:
    x, y = _data()
    torch.manual_seed(1)
    teacher = tnconv.cnn4(10, 1, widths=(8, 8, 8, 8))
    with torch.no_grad():  # sharp, input-dependent logits: something to learn
        teacher.classifier.fc.weight.mul_(20)
    teacher.train()
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    students = {}
    for distill in (0.0, 1.0):
        torch.manual_seed(2)
        students[distill] = tnconv.cnn4(10, 1, widths=(8, 8, 8, 8))
        tnconv.fit(students[distill], (x, y), epochs=3, batch_size=64, lr=0.05,
                   schedule="constant", progress=False, teacher=teacher, distill=distill,
                   temperature=2.0)
    assert teacher.training  # mode restored
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in state.items())
    teacher.eval()
    assert _kl(students[1.0], teacher, x) < 0.5 * _kl(students[0.0], teacher, x)


def test_the_loss_mixes_kl_and_cross_entropy() -> None:
    s, t, y = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    ce = F.cross_entropy(s, y)
    kl = F.kl_div(F.log_softmax(s / 3, 1), F.log_softmax(t / 3, 1), log_target=True,
                  reduction="batchmean") * 9
    assert torch.allclose(distillation_loss(s, t, y, distill=0.0, temperature=3.0), ce)
    assert torch.allclose(distillation_loss(s, t, y, distill=1.0, temperature=3.0), kl)
    mixed = distillation_loss(s, t, y, distill=0.25, temperature=3.0)
    assert torch.allclose(mixed, 0.25 * kl + 0.75 * ce)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"distill": -0.1}, ValueError, "distill must be in"),
    ({"distill": math.nan}, ValueError, "distill must be finite"),
    ({"distill": "all"}, TypeError, "distill must be a real number"),
    ({"temperature": 0.0}, ValueError, "temperature must be > 0"),
    ({"temperature": -2}, ValueError, "temperature must be > 0"),
    ({"teacher": "dense"}, TypeError, "teacher must be"),
    ({"teacher": None, "distill": 0.5}, ValueError, "need teacher="),
])
def test_bad_settings_are_refused(kwargs: dict, error: type, match: str) -> None:
    x, y = _data(32)
    options = {"teacher": tnconv.cnn4(10, 1, widths=(8, 8, 8, 8)), **kwargs}
    with pytest.raises(error, match=match):
        tnconv.fit(tnconv.cnn4(10, 1, widths=(8, 8, 8, 8)), (x, y), epochs=1, progress=False,
                   **options)


def test_compress_distils_from_the_dense_model_and_refuses_idle_options() -> None:
    x, y = _data(128)
    dense = tnconv.cnn4(10, 1, widths=(8, 8, 8, 8)).eval()
    state = {k: v.clone() for k, v in dense.state_dict().items()}
    small, report = tnconv.compress(dense, (x, y), params=0.5, allocate="uniform", epochs=1,
                                    train_data=(x, y), finetune={"distill": 1.0,
                                                                 "temperature": 2.0},
                                    progress=False, latency=False)
    assert report.accuracy_finetuned is not None
    assert all(torch.equal(v, dense.state_dict()[k]) for k, v in state.items())
    with pytest.raises(ValueError, match="epochs=0"):
        tnconv.compress(dense, (x, y), finetune={"distill": 1.0}, progress=False)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        tnconv.compress(dense, (x, y), epochs=1, finetune={"temperature": 0}, progress=False)
