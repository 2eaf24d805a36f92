"""Spectra across cuts against float64 numpy SVDs; entropies and ranks of known spectra."""

import math

import numpy as np
import pytest
import torch
from _kernels import SHAPES, make_kernel

import tnconv
from tnconv.spectra import matricize


def numpy_matrix(w: torch.Tensor, cut: str) -> np.ndarray:
    legs = tnconv.kernel_legs(w)
    left, right = (g.split(",") for g in cut.split("|"))
    perm = [legs.index(n) for n in left + right]
    rows = math.prod(w.shape[legs.index(n)] for n in left)
    return w.double().numpy().transpose(perm).reshape(rows, -1)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_spectrum_matches_numpy_every_cut(name):
    w = make_kernel(name, torch.float32)
    for cut in tnconv.all_cuts(w):
        ref = np.linalg.svd(numpy_matrix(w, cut), compute_uv=False)
        s = tnconv.spectrum(w, cut)
        assert s.dtype == torch.float32 and s.ndim == 1
        assert torch.all(s[:-1] >= s[1:])
        np.testing.assert_allclose(s.numpy(), ref, atol=1e-5 * ref[0], rtol=0)
        s64 = tnconv.spectrum(w, cut, dtype=torch.float64)
        assert s64.dtype == torch.float64
        np.testing.assert_allclose(s64.numpy(), ref, atol=1e-12 * ref[0], rtol=0)


def test_spectrum_half_precision_is_float32():
    w = make_kernel("conv3x3", torch.float16)
    s = tnconv.spectrum(w, "out|in,kh,kw")
    assert s.dtype == torch.float32


def test_spectrum_with_sub_legs():
    w = make_kernel("conv3x3")
    s = tnconv.spectrum(w, "out0|out1,in,kh,kw", split={"out": (2, 4)})
    m = w.reshape(2, 4, 6, 3, 3).reshape(2, -1).numpy()
    np.testing.assert_allclose(s.numpy(), np.linalg.svd(m, compute_uv=False), rtol=1e-12)


def test_matricize_orientation():
    m, _, groups = matricize(make_kernel("conv3x3"), "out,kh|in,kw")
    assert tuple(m.shape) == (24, 18)
    assert groups == (("out", "kh"), ("in", "kw"))


def test_entropy_known_values():
    assert float(tnconv.entropy(torch.ones(8))) == pytest.approx(3.0)
    assert float(tnconv.entropy(torch.tensor([5.0, 0.0, 0.0]))) == pytest.approx(0.0)
    assert float(tnconv.entropy(torch.ones(8), base=math.e)) == pytest.approx(math.log(8))
    # scale invariance (normalised)
    s = torch.tensor([3.0, 2.0, 1.0])
    assert float(tnconv.entropy(10 * s)) == pytest.approx(float(tnconv.entropy(s)))
    # von Neumann by hand
    p = np.array([9, 4, 1]) / 14
    assert float(tnconv.entropy(s, alpha=1)) == pytest.approx(-(p * np.log2(p)).sum())
    # Renyi-2, Hartley (alpha=0) and min-entropy (alpha=inf)
    assert float(tnconv.entropy(s, alpha=2)) == pytest.approx(-np.log2((p**2).sum()))
    assert float(tnconv.entropy(s, alpha=0)) == pytest.approx(np.log2(3))
    assert float(tnconv.entropy(s, alpha=math.inf)) == pytest.approx(-np.log2(p.max()))
    assert float(tnconv.entropy(torch.zeros(3))) == 0.0


def test_entropy_ignores_zero_singular_values():
    # p = (9, 4, 1, 0, 0) / 14: zeros add nothing to any entropy, Hartley counts 3 values
    s = torch.tensor([3.0, 2.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    p = np.array([9, 4, 1]) / 14
    assert float(tnconv.entropy(s, alpha=0)) == pytest.approx(math.log2(3))
    assert float(tnconv.entropy(s, alpha=1)) == pytest.approx(-(p * np.log2(p)).sum())
    assert float(tnconv.entropy(s, alpha=2)) == pytest.approx(-math.log2((p**2).sum()))
    assert float(tnconv.entropy(s, alpha=math.inf)) == pytest.approx(math.log2(14 / 9))


@pytest.mark.parametrize(
    "bad", [dict(s=[1.0]), dict(s=torch.ones(2, 2)), dict(s=torch.tensor([-1.0])),
            dict(s=torch.ones(3), alpha=-1), dict(s=torch.ones(3), base=1)],
)
def test_entropy_bad_input(bad):
    with pytest.raises((TypeError, ValueError)):
        tnconv.entropy(**bad)


def test_rank_for_error_brute_force():
    g = torch.Generator().manual_seed(1)
    s = torch.rand(30, generator=g, dtype=torch.float64).sort(descending=True).values
    total = float((s**2).sum())
    for target in [0.0, 0.01, 0.1, 0.3, 0.5, 0.9]:
        r = tnconv.rank_for_error(s, target)
        err = lambda k: math.sqrt(float((s[k:] ** 2).sum()) / total)  # noqa: E731
        assert err(r) <= target + 1e-12
        assert r == 1 or err(r - 1) > target
    assert tnconv.rank_for_error(s, 0.0) == 30
    assert tnconv.rank_for_error(torch.zeros(4), 0.1) == 0


@pytest.mark.parametrize("bad", [1.0, -0.1, "a", True])
def test_rank_for_error_rejects(bad):
    with pytest.raises((TypeError, ValueError)):
        tnconv.rank_for_error(torch.ones(3), bad)


def test_norm_curve_definitions():
    s = torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64)
    c = tnconv.norm_curve(s)
    total = 21.0
    assert c.rank.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(c.rel_error, [1, math.sqrt(5 / total), math.sqrt(1 / total), 0])
    np.testing.assert_allclose(
        c.norm_loss, [1, 1 - math.sqrt(16 / total), 1 - math.sqrt(20 / total), 0], atol=1e-15
    )
    # the curve matches an actual truncation
    w = make_kernel("conv3x3")
    s = tnconv.spectrum(w, "out,kh|in,kw")
    curve = tnconv.norm_curve(s)
    for r in (1, 5, 10):
        wt, rep = tnconv.truncate(w, "out,kh|in,kw", max_bond=r)
        assert float((w - wt).norm() / w.norm()) == pytest.approx(float(curve.rel_error[r]))
        assert 1 - float(wt.norm() / w.norm()) == pytest.approx(float(curve.norm_loss[r]))
