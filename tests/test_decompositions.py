"""The Tucker-2 and CP decompositions of the core (``tnconv.tucker``, ``tnconv.cp``).

References are dense: the kernel itself (exact reconstructions in float64), numpy's SVD of
the unfoldings in float64 (leg spectra, HOSVD error bound), and the relative error measured
from ``to_kernel()``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tnconv.cp import DEFAULT_CP_RATIO, KernelCP, cp_als, to_cp
from tnconv.layers import CPConv2d, FactorizedConv2d, MPSConv2d, TuckerConv2d
from tnconv.tucker import KernelTucker, to_tucker, tucker2

# channel legs whose unfoldings are wide, tall and square; a 1x1 and a non-square kernel
SHAPES = [(12, 10, 3, 3), (40, 3, 3, 3), (4, 32, 1, 1), (6, 5, 2, 4), (9, 9, 1, 1)]


def _kernel(shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def _measured(t, w):
    """``||W - W_t|| / ||W||`` in float64."""
    w = w.double()
    return float((t.to_kernel().double() - w).norm() / w.norm())


def _unfolding_svdvals(w, axis):
    m = w.double().movedim(axis, 0).reshape(w.shape[axis], -1).numpy()
    return np.linalg.svd(m, compute_uv=False)


# ---------------------------------------------------------------------- Tucker-2


@pytest.mark.parametrize("shape", SHAPES)
def test_tucker_exact_without_truncation(shape):
    w = _kernel(shape)
    t = to_tucker(w)
    assert isinstance(t, KernelTucker)
    assert torch.allclose(t.to_kernel(), w, atol=1e-12, rtol=0)
    assert t.rel_error < 1e-13
    assert t.ranks == t.full_ranks == (min(shape[0], math.prod(shape) // shape[0]),
                                       min(shape[1], math.prod(shape) // shape[1]))
    # the leg spectra are those of the unfoldings (numpy, float64)
    for axis, s in enumerate(t.leg_spectra):
        np.testing.assert_allclose(s.numpy(), _unfolding_svdvals(w, axis), atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES[:3])
@pytest.mark.parametrize(
    "criteria",
    [{"ranks": 2}, {"ranks": (3, 1)}, {"max_bond": 2}, {"keep": 0.5}, {"max_error": 0.4},
     {"cutoff": 0.5}, {"cutoff": 0.1, "cutoff_mode": "rsum2"}, {"ratio": 3.0},
     {"max_bond": 3, "max_error": 0.2}],
)
def test_tucker_truncated_counts_and_errors(shape, criteria):
    w = _kernel(shape)
    t = to_tucker(w, **criteria)
    (r_out, r_in), (o, i, kh, kw) = t.ranks, shape
    assert (t.u_out.shape, t.core.shape, t.u_in.shape) == ((o, r_out), (r_out, r_in, kh, kw),
                                                          (i, r_in))
    assert t.num_params == o * r_out + r_out * r_in * kh * kw + i * r_in
    assert t.num_params == sum(f.numel() for f in t.factors)
    assert t.dense_params == w.numel()
    assert t.compression_ratio == pytest.approx(w.numel() / t.num_params)
    assert t.rel_error == pytest.approx(_measured(t, w), rel=1e-9, abs=1e-14)
    for u in (t.u_out, t.u_in):  # orthonormal leg factors
        assert torch.allclose(u.T @ u, torch.eye(u.shape[1], dtype=w.dtype), atol=1e-12)
    if "max_error" in criteria:  # the HOSVD bound, unless max_bond cut deeper
        assert t.rel_error <= criteria["max_error"] or max(t.ranks) == criteria["max_bond"]
        assert t.error_bound == criteria["max_error"]
    if "ratio" in criteria:
        assert t.num_params <= w.numel() / criteria["ratio"]
    if "max_bond" in criteria:
        assert max(t.ranks) <= criteria["max_bond"]


def test_tucker_truncation_is_the_hosvd_projection():
    """Truncated factors are the leading singular vectors, and the core the projection."""
    w = _kernel((12, 10, 3, 3))
    t = to_tucker(w, ranks=(4, 3), n_iter=0)  # HOSVD: HOOI moves it on purpose
    full = to_tucker(w)
    a, b = full.u_out[:, :4], full.u_in[:, :3]
    assert torch.allclose(t.u_out @ t.u_out.T, a @ a.T, atol=1e-10)  # same subspace
    assert torch.allclose(t.to_kernel(), torch.einsum("oihw,oa,ib,pa,jb->pjhw", w, a, b, a, b),
                          atol=1e-10)
    # error of the projection: at least the larger single-leg Eckart-Young tail
    tail = [math.sqrt(float((s[r:] ** 2).sum() / (s ** 2).sum()))
            for s, r in zip(full.leg_spectra, (4, 3), strict=True)]
    assert max(tail) - 1e-12 <= t.rel_error <= math.hypot(*tail) + 1e-12


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_tucker_keeps_dtype(dtype, tol):
    w = _kernel((8, 6, 3, 3), dtype)
    t = to_tucker(w)
    assert all(f.dtype == dtype for f in t.factors)
    assert t.to_kernel().dtype == dtype
    assert t.rel_error < tol
    assert t.rel_error == pytest.approx(_measured(t, w), rel=1e-6)


def test_tucker2_is_to_tucker_factors():
    w = _kernel((8, 6, 3, 3))
    u, g, v = tucker2(w, ranks=(4, 3))
    t = to_tucker(w, ranks=(4, 3))
    assert all(torch.equal(x, y) for x, y in zip((u, g, v), t.factors, strict=True))


def test_tucker_summary_and_repr():
    t = to_tucker(_kernel((8, 6, 3, 3)), ranks=(4, 3))
    s = t.summary()
    assert s["kind"] == "tucker" and s["shape"] == "8x6x3x3"
    assert s["ranks"] == (4, 3) and s["full_ranks"] == (8, 6)
    assert s["num_params"] == t.num_params and s["rel_error"] == t.rel_error
    assert s["error_bound"] is None
    assert repr(t).startswith("KernelTucker(shape=(8, 6, 3, 3), ranks=(4, 3)")


# ---------------------------------------------------------------------- CP


def _cp_kernel(shape, rank, seed=3):
    g = torch.Generator().manual_seed(seed)
    factors = [torch.randn(n, rank, generator=g, dtype=torch.float64) for n in shape]
    return torch.einsum("or,ir,hr,wr->oihw", *factors)


@pytest.mark.parametrize("shape", [(6, 4, 3, 3), (5, 7, 1, 3)])
def test_cp_exact_on_a_cp_kernel(shape):
    w = _cp_kernel(shape, 2)
    cp = to_cp(w, 2, n_iter=500, tol=1e-15)
    assert isinstance(cp, KernelCP) and cp.rank == 2
    assert cp.rel_error < 1e-6
    assert torch.allclose(cp.to_kernel(), w, atol=1e-5 * float(w.abs().max()))
    assert torch.allclose(torch.einsum("or,ir,hr,wr->oihw", cp.a, cp.b, cp.c, cp.d),
                          cp.to_kernel(), atol=1e-12)
    # ALS tracks its error from norms (sqrt of a difference): good to ~1e-8 near zero
    assert cp.als_errors[-1] == pytest.approx(cp.rel_error, abs=1e-7)


@pytest.mark.parametrize("options", [{"rank": 5}, {"max_bond": 3}, {"ratio": 2.5}, {},
                                     {"max_error": 0.6}, {"rank": 8, "max_bond": 4}])
def test_cp_counts_and_measured_error(options):
    w = _kernel((8, 6, 3, 3))
    cp = to_cp(w, n_iter=15, **options)
    assert [tuple(f.shape) for f in cp.factors] == [(n, cp.rank) for n in w.shape]
    assert cp.num_params == cp.rank * sum(w.shape) == sum(f.numel() for f in cp.factors)
    assert cp.compression_ratio == pytest.approx(w.numel() / cp.num_params)
    assert cp.rel_error == pytest.approx(_measured(cp, w), rel=1e-9)
    assert cp.als_errors[-1] == pytest.approx(cp.rel_error, rel=1e-6)
    expected = {"rank": 5, "max_bond": 3, "ratio": int(w.numel() / (2.5 * sum(w.shape))),
                "": int(w.numel() / (DEFAULT_CP_RATIO * sum(w.shape)))}
    if "max_error" in options:  # smallest power of two that fits, or the full budget
        assert cp.rel_error <= 0.6 or cp.rank == w.numel() // sum(w.shape)
        assert cp.rank == 1 or to_cp(w, cp.rank // 2, n_iter=15).rel_error > 0.6
    elif "rank" in options and "max_bond" in options:
        assert cp.rank == 4
    else:
        assert cp.rank == expected[next(iter(options), "")]


def test_cp_keeps_dtype_and_is_reproducible():
    w = _kernel((8, 6, 3, 3), torch.float32)
    a, b = to_cp(w, 4, n_iter=5), to_cp(w, 4, n_iter=5)
    assert all(f.dtype == torch.float32 for f in a.factors)
    assert a.to_kernel().dtype == torch.float32
    assert all(torch.equal(x, y) for x, y in zip(a.factors, b.factors, strict=True))
    factors, errors = cp_als(w, 4, n_iter=5)
    assert all(torch.equal(x, y) for x, y in zip(factors, a.factors, strict=True))
    assert errors == a.als_errors


def test_cp_summary_and_repr():
    cp = to_cp(_kernel((8, 6, 3, 3)), 3, n_iter=5)
    assert cp.summary()["rank"] == 3 and cp.summary()["kind"] == "cp"
    assert repr(cp).startswith("KernelCP(shape=(8, 6, 3, 3), rank=3")


def test_zero_kernel():
    w = torch.zeros(4, 3, 3, 3)
    assert to_tucker(w, max_error=0.1).rel_error == 0.0
    assert to_cp(w, 2).rel_error == 0.0


# ---------------------------------------------------------------------- bad input

W = _kernel((8, 4, 3, 3))


@pytest.mark.parametrize("fn", [to_tucker, to_cp])
@pytest.mark.parametrize(
    "kernel, exc, match",
    [([[1.0]], TypeError, "torch.Tensor"),
     (torch.ones(4, 4, 3, 3, dtype=torch.int64), TypeError, "floating-point"),
     (torch.ones(4, 9), ValueError, "4-D"),
     (torch.full((4, 4, 3, 3), math.nan), ValueError, "NaN or Inf")],
)
def test_bad_kernels(fn, kernel, exc, match):
    with pytest.raises(exc, match=match):
        fn(kernel)


@pytest.mark.parametrize(
    "fn, kwargs, exc, match",
    [(to_tucker, {"ranks": (2, 0)}, ValueError, "r_in"),
     (to_tucker, {"ranks": (1, 2, 3)}, ValueError, r"\(r_out, r_in\)"),
     (to_tucker, {"ranks": "2"}, ValueError, "ranks"),
     (to_tucker, {"max_bond": 2.5}, TypeError, "max_bond"),
     (to_tucker, {"keep": 1.5}, ValueError, "keep"),
     (to_tucker, {"max_error": 1.0}, ValueError, "max_error"),
     (to_tucker, {"cutoff_mode": "rel"}, ValueError, "without cutoff"),
     (to_tucker, {"ratio": 1.0}, ValueError, "ratio"),
     (to_tucker, {"split": "binary"}, TypeError, "split"),
     (to_cp, {"rank": 0}, ValueError, "rank"),
     (to_cp, {"rank": "3"}, TypeError, "rank"),
     (to_cp, {"max_bond": 2.5}, TypeError, "max_bond"),
     (to_cp, {"max_error": -0.1}, ValueError, "max_error"),
     (to_cp, {"ratio": "4"}, TypeError, "ratio"),
     (to_cp, {"rank": 2, "n_iter": 0}, ValueError, "n_iter"),
     (to_cp, {"rank": 2, "tol": -1}, ValueError, "tol"),
     (to_cp, {"keep": 0.5}, TypeError, "keep")],
)
def test_bad_options(fn, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fn(W, **kwargs)


# ---------------------------------------------------------------------- the layers use them


def test_layers_share_one_from_conv_and_build_from_the_decomposition():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 8, 3, padding=1).double()
    cases = [(MPSConv2d, {"max_bond": 3}), (TuckerConv2d, {"ranks": (4, 3)}),
             (CPConv2d, {"rank": 3, "n_iter": 5})]
    for cls, options in cases:
        assert cls.from_conv.__func__ is FactorizedConv2d.from_conv.__func__
        assert cls.__init__ is FactorizedConv2d.__init__
        layer = cls.from_conv(conv, **options)
        ref = cls.decompose(conv.weight.detach(), **options)
        assert torch.allclose(layer.kernel(), ref.to_kernel(), atol=1e-12)
        assert layer.rel_error == pytest.approx(ref.rel_error)
        assert layer.num_params == ref.num_params + 8  # the bias
