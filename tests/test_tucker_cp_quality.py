"""Fit quality of Tucker-2 (HOSVD + HOOI) and CP (ALS + line search), and the fast CP layer.

References are independent and dense: a numpy float64 HOOI and a numpy float64 plain ALS from
the same start, the HOSVD error, and the layer's dense path (one ``F.conv2d``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tnconv.cp import cp_als, to_cp
from tnconv.layers import CPConv2d
from tnconv.tucker import to_tucker


def _kernel(shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


# ---------------------------------------------------------------------- Tucker-2 / HOOI

CASES = [((12, 10, 3, 3), (4, 3)), ((16, 8, 3, 3), (5, 5)), ((8, 12, 2, 3), (2, 6)),
         ((20, 6, 1, 3), (7, 2)), ((6, 5, 3, 3), (1, 1)), ((16, 8, 2, 1), (5, 2))]


@pytest.mark.parametrize("shape, ranks", CASES)
@pytest.mark.parametrize("seed", range(3))
def test_hooi_error_never_above_hosvd(shape, ranks, seed):
    w = _kernel(shape, seed)
    hosvd = to_tucker(w, ranks=ranks, n_iter=0)
    t = to_tucker(w, ranks=ranks)
    assert hosvd.n_iter == 0 and hosvd.hooi_errors == pytest.approx([hosvd.rel_error])
    assert t.ranks == ranks and 1 <= t.n_iter <= 50
    assert t.rel_error <= hosvd.rel_error + 1e-12
    # the error reported is the one measured, and the best of the sweeps
    assert t.rel_error == pytest.approx(min(t.hooi_errors), rel=1e-9, abs=1e-12)
    for u in (t.u_out, t.u_in):
        assert torch.allclose(u.T @ u, torch.eye(u.shape[1], dtype=u.dtype), atol=1e-12)
    # the core is the projection of the kernel on the factors
    core = torch.einsum("oihw,oa,ib->abhw", w, t.u_out, t.u_in)
    assert torch.allclose(core, t.core, atol=1e-12)


def test_hooi_improves_on_hosvd_for_a_typical_kernel():
    w = _kernel((16, 12, 3, 3), 1)
    hosvd = to_tucker(w, ranks=(5, 4), n_iter=0).rel_error
    assert to_tucker(w, ranks=(5, 4)).rel_error < hosvd - 1e-4


def _numpy_hooi(w, ranks, n_iter):
    """Textbook HOOI on the modes (out, in): HOSVD start, then alternate leading singular
    vectors of the kernel projected on the other leg. Returns (U_out, U_in, errors)."""
    o, i = w.shape[:2]

    def lead(m, r):
        return np.linalg.svd(m, full_matrices=False)[0][:, :r]

    a = lead(w.reshape(o, -1), ranks[0])
    b = lead(np.moveaxis(w, 1, 0).reshape(i, -1), ranks[1])
    errors = []
    for _ in range(n_iter):
        a = lead(np.einsum("oihw,ib->obhw", w, b).reshape(o, -1), ranks[0])
        b = lead(np.einsum("oihw,oa->iahw", w, a).reshape(i, -1), ranks[1])
        rec = np.einsum("oihw,oa,ib,pa,jb->pjhw", w, a, b, a, b)
        errors.append(np.linalg.norm(rec - w) / np.linalg.norm(w))
    return a, b, errors


@pytest.mark.parametrize("shape, ranks", CASES[:3])
def test_hooi_matches_numpy_reference(shape, ranks):
    w = _kernel(shape, 7)
    a, b, errors = _numpy_hooi(w.numpy(), ranks, 6)
    t = to_tucker(w, ranks=ranks, n_iter=6, tol=0)
    assert t.n_iter == 6
    np.testing.assert_allclose(t.hooi_errors[1:], errors, rtol=1e-9, atol=1e-12)
    assert t.rel_error == pytest.approx(errors[-1], rel=1e-9)
    # the same subspaces (projectors: the bases themselves are defined up to a rotation)
    np.testing.assert_allclose((t.u_out @ t.u_out.T).numpy(), a @ a.T, atol=1e-8)
    np.testing.assert_allclose((t.u_in @ t.u_in.T).numpy(), b @ b.T, atol=1e-8)


def test_hooi_skipped_where_hosvd_is_optimal():
    w = _kernel((12, 10, 3, 3))
    for ranks in ((12, 4), (3, 10)):  # a full leg: the HOSVD is the optimum
        assert to_tucker(w, ranks=ranks).n_iter == 0
    assert to_tucker(_kernel((12, 10, 1, 1)), ranks=(4, 3)).n_iter == 0  # a matrix


def test_hooi_tolerance_stops_early_and_max_error_still_holds():
    w = _kernel((16, 12, 3, 3), 2)
    loose, tight = to_tucker(w, ranks=(5, 4), tol=1e-2), to_tucker(w, ranks=(5, 4), tol=0)
    assert loose.n_iter < tight.n_iter == 50
    assert tight.rel_error <= loose.rel_error + 1e-12
    for max_error in (0.3, 0.6):
        t = to_tucker(w, max_error=max_error)
        assert t.rel_error <= max_error
        assert t.rel_error <= to_tucker(w, max_error=max_error, n_iter=0).rel_error + 1e-12


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5),
                                        (torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_dtypes_and_autograd_through_to_kernel(dtype, tol):
    w = _kernel((8, 6, 3, 3), 3, dtype)
    ref = to_tucker(w.double(), ranks=(4, 3))
    for t in (to_tucker(w, ranks=(4, 3)), to_cp(w, 4, n_iter=20)):
        assert all(f.dtype == dtype for f in t.factors)
        factors = [f.detach().float().requires_grad_() for f in t.factors]
        t.factors = tuple(factors)
        t.to_kernel().square().sum().backward()
        assert all(f.grad is not None and f.grad.shape == f.shape for f in factors)
    t = to_tucker(w, ranks=(4, 3))
    assert abs(t.rel_error - ref.rel_error) <= tol * 10 + 1e-12


@pytest.mark.parametrize(
    "fn, kwargs, exc, match",
    [(to_tucker, {"n_iter": -1}, ValueError, "n_iter"),
     (to_tucker, {"n_iter": 2.5}, TypeError, "n_iter"),
     (to_tucker, {"n_iter": True}, TypeError, "n_iter"),
     (to_tucker, {"tol": -1e-3}, ValueError, "tol"),
     (to_tucker, {"tol": math.nan}, ValueError, "tol"),
     (to_tucker, {"tol": "1e-6"}, TypeError, "tol"),
     (to_cp, {"rank": 2, "n_iter": 0}, ValueError, "n_iter"),
     (to_cp, {"rank": 2, "tol": math.inf}, ValueError, "tol"),
     (to_cp, {"rank": 2, "n_starts": 0}, ValueError, "n_starts"),
     (to_cp, {"rank": 2, "max_time": 0}, ValueError, "max_time"),
     (to_cp, {"rank": 2, "max_time": "1"}, TypeError, "max_time"),
     (to_cp, {"rank": 2, "ridge": -1.0}, ValueError, "ridge")],
)
def test_bad_iteration_options(fn, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fn(_kernel((8, 4, 3, 3)), **kwargs)


# ---------------------------------------------------------------------- CP


def _plain_als(w, rank, n_iter=50, tol=1e-7, seed=0):
    """The former ``cp_als``: undamped ALS, no line search, numpy float64, from the same start
    (leading left singular vectors, then the same fixed-seed Gaussian columns)."""
    x = w.numpy()
    gen = torch.Generator().manual_seed(seed)
    factors = []
    for mode, n in enumerate(x.shape):
        u = np.linalg.svd(np.moveaxis(x, mode, 0).reshape(n, -1), full_matrices=False)[0]
        u = u[:, :rank]
        if u.shape[1] < rank:
            extra = torch.randn(n, rank - u.shape[1], generator=gen, dtype=torch.float64)
            u = np.concatenate([u, extra.numpy() / math.sqrt(n)], 1)
        factors.append(u)
    letters = "abcd"
    errors = []
    for _ in range(n_iter):
        for mode in range(4):
            others = [m for m in range(4) if m != mode]
            v = np.ones((rank, rank))
            for m in others:
                v = v * (factors[m].T @ factors[m])
            eq = "abcd," + ",".join(f"{letters[m]}z" for m in others) + f"->{letters[mode]}z"
            mk = np.einsum(eq, x, *(factors[m] for m in others))
            factors[mode] = mk @ np.linalg.pinv(v, hermitian=True)
        rec = np.einsum("az,bz,cz,dz->abcd", *factors)
        errors.append(np.linalg.norm(rec - x) / np.linalg.norm(x))
        if len(errors) > 1 and abs(errors[-2] - errors[-1]) < tol:
            break
    return errors[-1]


@pytest.mark.parametrize("shape", [(8, 6, 3, 3), (12, 10, 3, 3), (6, 9, 1, 3)])
@pytest.mark.parametrize("rank", [2, 5, 9])
def test_cp_at_least_as_good_as_plain_als_from_the_same_start(shape, rank):
    for seed in (rank,):  # a different kernel per case
        w = _kernel(shape, seed)
        cp = to_cp(w, rank)
        assert cp.rel_error <= _plain_als(w, rank) + 1e-9
        assert cp.rel_error == pytest.approx(_rel(cp.to_kernel(), w), rel=1e-9)
        assert cp.als_errors[-1] == pytest.approx(cp.rel_error, rel=1e-6)


def test_cp_more_starts_never_worse_and_line_search_optional():
    w = _kernel((8, 6, 3, 3), 4)
    one, three = to_cp(w, 6, n_iter=60, n_starts=1), to_cp(w, 6, n_iter=60, n_starts=3)
    assert three.rel_error <= one.rel_error + 1e-12
    _, plain = cp_als(w, 6, n_iter=30, tol=0, line_search=False)
    _, searched = cp_als(w, 6, n_iter=30, tol=0)
    # both monotone (a line-search step is kept only where it lowers the error)
    for errors in (plain, searched):
        assert all(b <= a + 1e-10 for a, b in zip(errors, errors[1:], strict=False))
    assert len(plain) == len(searched) == 30


def test_cp_ridge_keeps_terms_small_and_vanishes_on_exact_kernels():
    w = _kernel((8, 8, 3, 3), 1)
    plain, damped = to_cp(w, 16), to_cp(w, 16, ridge=5e-3)

    def term_norms(cp):  # sum of the rank-one terms' norms over the kernel's (1: no cancelling)
        return float(torch.stack([f.norm(dim=0) for f in cp.factors]).prod(0).sum() / w.norm())

    assert term_norms(damped) < term_norms(plain)
    assert plain.rel_error <= damped.rel_error
    g = torch.Generator().manual_seed(2)
    exact = torch.einsum("or,ir,hr,wr->oihw", *(torch.randn(n, 2, generator=g, dtype=torch.float64)
                                                for n in (6, 4, 3, 3)))
    assert to_cp(exact, 2, ridge=5e-3, n_iter=500, tol=1e-15).rel_error < 1e-6


def test_cp_max_time_stops_the_sweeps():
    w = _kernel((16, 16, 3, 3), 5)
    _, errors = cp_als(w, 20, n_iter=100000, tol=0, max_time=0.2)
    assert 1 <= len(errors) < 100000


# ---------------------------------------------------------------------- the fast CP layer


@pytest.mark.parametrize(
    "conv_kwargs, channels_last",
    [({"padding": 1}, False), ({"padding": 1}, True), ({"stride": 2, "bias": False}, False),
     ({"padding": (2, 1), "dilation": (2, 1), "stride": (1, 2)}, True),
     ({"padding": 1, "padding_mode": "reflect"}, False)],
)
def test_cp_factored_path_values_and_gradients_match_dense(conv_kwargs, channels_last):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 3, **conv_kwargs).double()
    fact = CPConv2d.from_conv(conv, rank=7, n_iter=10, path="factored")
    dense = CPConv2d.from_conv(conv, rank=7, n_iter=10, path="dense")
    x = torch.randn(3, 6, 9, 10, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    outs, grads = [], []
    for layer in (fact, dense):
        xi = x.clone().requires_grad_()
        out = layer(xi)
        out.backward(torch.cos(torch.arange(out.numel(), dtype=out.dtype)).view_as(out))
        outs.append(out)
        grads.append([xi.grad] + [p.grad for p in layer.parameters()])
    assert outs[0].is_contiguous()  # NCHW, like nn.Conv2d's
    assert torch.allclose(outs[0], outs[1], atol=1e-12)
    assert torch.allclose(outs[1], F.conv2d(F.pad(x, fact._pads, mode=conv.padding_mode)
                                            if conv.padding_mode != "zeros" else x,
                                            dense.kernel(), dense.bias, conv.stride,
                                            0 if conv.padding_mode != "zeros" else conv.padding,
                                            conv.dilation), atol=1e-12)
    for a, b in zip(grads[0], grads[1], strict=True):
        assert torch.allclose(a, b, atol=1e-10)
