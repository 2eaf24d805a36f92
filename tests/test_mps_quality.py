"""Quality of tnconv.to_mps against a plain TT-SVD reference (numpy, float64, left to right):
error at equal bond dims, minimal bonds, the max_error allocation, ALS sweeps, dtypes."""

import math

import numpy as np
import pytest
import torch

import tnconv


def chain_array(w, chain):
    """The kernel as a float64 numpy array with one axis per site (chain order)."""
    legs = tnconv.kernel_legs(w)
    sites = [g.split(",") for g in chain.split("|")]
    perm = [legs.index(n) for g in sites for n in g]
    dims = [math.prod(w.shape[legs.index(n)] for n in g) for g in sites]
    return w.double().numpy().transpose(perm).reshape(dims)


def tt_svd(a, ranks):
    """Plain truncated TT-SVD, left to right; returns (relative error, kept ranks)."""
    dims, rest, r_prev, kept, cores = a.shape, a, 1, [], []
    for k, d in enumerate(dims[:-1]):
        u, s, vh = np.linalg.svd(rest.reshape(r_prev * d, -1), full_matrices=False)
        r = min(ranks[k], len(s))
        cores.append(u[:, :r])
        rest, r_prev = s[:r, None] * vh[:r], r
        kept.append(r)
    out = rest
    for u in reversed(cores):
        out = (u @ out.reshape(u.shape[1], -1))
    return float(np.linalg.norm(out.reshape(a.shape) - a) / np.linalg.norm(a)), kept


def params(dims, ranks):
    full = [1, *ranks, 1]
    return sum(full[k] * d * full[k + 1] for k, d in enumerate(dims))


def tt_kernel(shape, bond, seed):
    """An 'out|kh|kw|in' kernel that is exactly a chain with bonds <= ``bond``."""
    g = torch.Generator().manual_seed(seed)
    o, i, kh, kw = shape
    dims = [o, kh, kw, i]
    rs = [1, bond, bond, bond, 1]
    out = torch.ones(1, 1, dtype=torch.float64)
    for k, d in enumerate(dims):
        core = torch.randn(rs[k], d * rs[k + 1], generator=g, dtype=torch.float64)
        out = (out @ core).reshape(-1, rs[k + 1])
    return out.reshape(o, kh, kw, i).permute(0, 3, 1, 2).contiguous()


def decaying_kernel(shape, seed, rate=0.3):
    """A kernel with geometrically decaying spectra on every cut (structured, like trained)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.zeros(shape, dtype=torch.float64)
    for j in range(12):
        parts = [torch.randn(n, generator=g, dtype=torch.float64) for n in shape]
        w += math.exp(-rate * j) * torch.einsum("a,b,c,d->abcd", *parts)
    return w + 1e-3 * torch.randn(shape, generator=g, dtype=torch.float64)


def kernels():
    out = []
    for seed, shape in enumerate([(8, 6, 3, 3), (16, 8, 3, 3), (12, 12, 5, 5), (24, 16, 3, 3)]):
        g = torch.Generator().manual_seed(seed)
        out.append((f"random{shape}", torch.randn(shape, generator=g, dtype=torch.float64)))
        out.append((f"decay{shape}", decaying_kernel(shape, seed)))
    out.append(("lowrank", tt_kernel((16, 12, 3, 3), 5, 7)))
    return out


KERNELS = kernels()
CHAINS = ["out|kh|kw|in", "in|kw|kh|out", "out,kh|kw|in", "out|in,kh|kw"]


def test_error_never_above_left_tt_svd_at_equal_bonds():
    worse = []
    for name, w in KERNELS[::3]:
        for chain in CHAINS[:3]:
            a = chain_array(w, chain)
            for b in (1, 3, 8):
                mps = tnconv.to_mps(w, chain, max_bond=b)
                ref_cap, _ = tt_svd(a, [b] * (a.ndim - 1))
                ref_same, _ = tt_svd(a, mps.bond_dims)
                if mps.rel_error > min(ref_cap, ref_same) + 1e-10:
                    worse.append((name, chain, b, mps.rel_error, ref_cap, ref_same))
    assert not worse


@pytest.mark.parametrize("name,w", KERNELS[1:4:2] + KERNELS[-1:])
def test_bonds_are_minimal(name, w):
    for chain in CHAINS:
        dims = chain_array(w, chain).shape
        for crit in ({}, {"max_bond": 4}, {"max_bond": 100}, {"max_error": 0.2}, {"keep": 0.7}):
            r = [1, *tnconv.to_mps(w, chain, **crit).bond_dims, 1]
            for k in range(1, len(r) - 1):
                assert r[k] <= min(r[k - 1] * dims[k - 1], dims[k] * r[k + 1]), (chain, crit, r)


def test_redundant_bonds_are_removed():
    # exactly a chain with bonds 9 on (24, 3, 3, 40): full bonds 24, 72, 40
    w = tt_kernel((24, 40, 3, 3), 9, 1)
    for crit in ({}, {"max_bond": 20}, {"max_bond": 12}):
        mps = tnconv.to_mps(w, "out|kh|kw|in", **crit)
        assert mps.bond_dims == [9, 9, 9], crit
        assert mps.rel_error < 1e-12
        assert mps.full_bond_dims == [24, 72, 40]
        assert [int(s.numel()) for s in mps.bond_spectra] == [24, 72, 40]


@pytest.mark.parametrize("max_error", [0.01, 0.05, 0.1, 0.2, 0.5])
def test_max_error_holds_measured_and_beats_uniform_rank(max_error):
    for name, w in KERNELS[1::2] + KERNELS[:3]:
        a = chain_array(w, "out|kh|kw|in")
        mps = tnconv.to_mps(w, max_error=max_error)
        assert mps.error_bound == max_error
        assert mps.rel_error <= max_error, (name, mps.rel_error)
        diff = mps.to_kernel() - w
        assert float(diff.norm() / w.norm()) <= max_error
        # the smallest uniform rank meeting the error (linear scan over the numpy TT-SVD)
        lo, hi = 1, max(a.shape[0], a.shape[-1], a.shape[0] * a.shape[1])
        while lo < hi:  # bisection, then the ranks just below are checked too
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if tt_svd(a, [mid] * 3)[0] <= max_error else (mid + 1, hi)
        uniform = lo
        while uniform > 1 and tt_svd(a, [uniform - 1] * 3)[0] <= max_error:
            uniform -= 1
        _, kept = tt_svd(a, [uniform] * 3)
        assert mps.num_params <= params(a.shape, kept), (name, mps.bond_dims, kept)


def ends_first_oracle(a, eps):
    """Fewest parameters of any 'ends first' chain within eps: every pair of end ranks, the
    ends the leading singular vectors of the first/last unfoldings, the middle a truncated SVD
    of the projection (numpy, float64, exact errors)."""
    o, kh, kw, i = a.shape
    norm2, budget, best = (a**2).sum(), eps**2 * (a**2).sum(), None
    u = np.linalg.svd(a.reshape(o, -1), full_matrices=False)[0]
    v = np.linalg.svd(a.reshape(-1, i), full_matrices=False)[2].T
    full = np.einsum("oa,ohwi,ib->ahwb", u, a, v)
    for r0 in range(1, o + 1):
        for rl in range(1, i + 1):
            core = full[:r0, :, :, :rl]
            left = budget - (norm2 - (core**2).sum())
            if left < 0:
                continue
            s = np.linalg.svd(core.reshape(r0 * kh, kw * rl), compute_uv=False)
            tails = np.append(np.cumsum((s**2)[::-1])[::-1], 0.0)
            r1 = max(1, int(np.nonzero(tails <= left)[0][0]))
            p = params(a.shape, [min(r0, kh * r1), r1, min(rl, kw * r1)])
            best = p if best is None else min(best, p)
    return best


@pytest.mark.parametrize("eps", [0.2, 0.5])
def test_max_error_at_most_the_best_ends_first_chain(eps):
    for name, w in [KERNELS[i] for i in (2, 3, 5, 7)]:  # where ends-first chains win
        a = chain_array(w, "out|kh|kw|in")
        mps = tnconv.to_mps(w, max_error=eps)
        assert mps.rel_error <= eps
        assert mps.num_params <= ends_first_oracle(a, eps * (1 - 1e-6)), (name, mps.bond_dims)


def test_ends_first_error_is_exact():
    from tnconv.mps.als import chain_dense
    from tnconv.mps.ranks import ends_first, ends_first_cores

    for name, w in KERNELS[1:4]:
        a = torch.from_numpy(chain_array(w, "out|kh|kw|in"))
        ranks, err2 = ends_first(a, list(a.shape[:1]) + [99, a.shape[-1]], 0.04 * a.square().sum())
        ref = float((chain_dense(ends_first_cores(a, ranks)) - a).square().sum())
        assert err2 == pytest.approx(ref, rel=1e-9, abs=1e-12), name
        assert err2 <= 0.04 * float(a.square().sum())


def test_max_error_on_split_and_grouped_chains():
    w = decaying_kernel((16, 8, 3, 3), 3)
    for kw in ({"split": {"out": (4, 4)}}, {"cut": "out,kh|kw|in"}, {"cut": "in|out,kh,kw"}):
        mps = tnconv.to_mps(w, kw.get("cut"), split=kw.get("split"), max_error=0.1)
        assert mps.rel_error <= 0.1
        assert mps.num_params < w.numel()


def test_sweeps_monotone_and_zero_unchanged():
    for _, w in KERNELS[::2]:
        base = tnconv.to_mps(w, max_bond=3)
        same = tnconv.to_mps(w, max_bond=3, sweeps=0)
        assert same.sweep_errors == []
        torch.testing.assert_close(same.to_kernel(), base.to_kernel(), rtol=0, atol=0)
        swept = tnconv.to_mps(w, max_bond=3, sweeps=4)
        errs = swept.sweep_errors
        assert len(errs) == 5 and errs[0] == pytest.approx(base.rel_error, abs=1e-10)
        assert all(b <= a for a, b in zip(errs, errs[1:]))
        assert swept.rel_error == pytest.approx(errs[-1], abs=1e-10)
        assert swept.bond_dims == base.bond_dims
        assert swept.summary()["sweep_errors"] == errs


def test_sweeps_improve_a_structured_kernel():
    w = decaying_kernel((24, 16, 3, 3), 5, rate=0.1)
    errs = tnconv.to_mps(w, "out|kh|kw|in", max_bond=4, sweeps=6).sweep_errors
    assert errs[-1] < errs[0] - 1e-6


@pytest.mark.parametrize("bad,exc", [(-1, ValueError), (1.5, TypeError), (True, TypeError),
                                     ("2", TypeError)])
def test_bad_sweeps(bad, exc):
    with pytest.raises(exc, match="sweeps"):
        tnconv.to_mps(torch.randn(4, 4, 3, 3), max_bond=2, sweeps=bad)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_dtypes_and_autograd(dtype):
    w = decaying_kernel((16, 8, 3, 3), 2).to(dtype)
    tol = {torch.float64: 1e-12, torch.float32: 1e-5}.get(dtype, 1e-2)
    for crit in ({"max_bond": 4}, {"max_error": 0.1}, {"max_bond": 4, "sweeps": 2}):
        mps = tnconv.to_mps(w, **crit)
        out = mps.to_kernel()
        assert out.dtype == dtype and out.shape == w.shape
        if "max_error" in crit:
            assert mps.rel_error <= 0.1 + tol
    wg = w.detach().double().requires_grad_()
    mps = tnconv.to_mps(wg, max_bond=4)
    mps.to_kernel().square().sum().backward()
    assert wg.grad is not None and torch.isfinite(wg.grad).all()
    cores = [a.detach().clone().requires_grad_() for a in mps.arrays]
    tnconv.contract(cores, mps.inds, mps.physical_legs, shape=mps.shape).sum().backward()
    assert all(c.grad is not None for c in cores)
    swept = tnconv.to_mps(w.detach().requires_grad_(), max_bond=4, sweeps=1)
    swept.to_kernel().float().sum().backward()
    assert all(a.is_leaf and a.grad is not None for a in swept.arrays)


def test_bond_spectra_are_the_original_cut_spectra():
    w = decaying_kernel((12, 12, 5, 5), 1)
    mps = tnconv.to_mps(w, "out|kh|kw|in", max_bond=3)
    a = chain_array(w, "out|kh|kw|in")
    for k, s in enumerate(mps.bond_spectra):
        ref = np.linalg.svd(a.reshape(math.prod(a.shape[: k + 1]), -1), compute_uv=False)
        np.testing.assert_allclose(s.numpy(), ref, atol=1e-10 * ref[0], rtol=0)


def test_minimal_ranks_caps_from_both_sides():
    """Every rank is at most r_{k-1} d_k and d_{k+1} r_{k+1}, and the largest such under the
    caps (brute force over all smaller rank vectors on small chains)."""
    import itertools

    from tnconv.mps.ranks import minimal_ranks

    assert minimal_ranks([4, 3, 3, 2], [100, 100, 100]) == [4, 6, 2]
    rng = np.random.default_rng(0)
    for _ in range(20):
        dims = [int(d) for d in rng.integers(1, 5, size=4)]
        caps = [int(c) for c in rng.integers(1, 12, size=3)]
        got = minimal_ranks(dims, caps)

        def ok(r, dims=dims):
            full = [1, *r, 1]
            return all(full[k + 1] <= full[k] * dims[k] and full[k + 1] <= dims[k + 1]
                       * full[k + 2] for k in range(3))

        assert ok(got) and all(g <= c for g, c in zip(got, caps))
        best = max((r for r in itertools.product(*(range(1, c + 1) for c in caps)) if ok(r)),
                   key=sum)
        assert sum(got) == sum(best)


def _ls_sweeps(a, cores, sweeps):
    """Reference ALS: each site by exact least squares (pseudo-inverses of its environment,
    no gauge), sweeping right to left first, then alternating; relative errors."""
    cores = [c.copy() for c in cores]
    dims = [c.shape[1] for c in cores]
    n, norm = len(cores), np.linalg.norm(a)

    def dense(cs):
        out = np.ones((1, 1))
        for c in cs:
            out = (out @ c.reshape(c.shape[0], -1)).reshape(-1, c.shape[-1])
        return out.reshape(dims)

    def env_left(k):
        out = np.ones((1, 1))
        for c in cores[:k]:
            out = (out @ c.reshape(c.shape[0], -1)).reshape(-1, c.shape[-1])
        return out  # (prod dims[:k], r_{k-1})

    def env_right(k):
        out = np.ones((1, 1))
        for c in reversed(cores[k + 1:]):
            out = (c.reshape(-1, c.shape[-1]) @ out).reshape(c.shape[0], -1)
        return out  # (r_k, prod dims[k+1:])

    errors = [np.linalg.norm(dense(cores) - a) / norm]
    for i in range(sweeps):
        for k in (range(n - 1, -1, -1) if i % 2 == 0 else range(n)):
            lm, rm = env_left(k), env_right(k)
            x = a.reshape(lm.shape[0], dims[k], rm.shape[1])
            cores[k] = np.einsum("al,ldr,rb->adb", np.linalg.pinv(lm), x, np.linalg.pinv(rm))
        errors.append(np.linalg.norm(dense(cores) - a) / norm)
    return errors


def test_sweeps_match_a_least_squares_reference():
    """The sweeps' errors equal those of plain least-squares ALS from the same start."""
    for seed in (0, 1):
        w = torch.randn(12, 10, 3, 3, generator=torch.Generator().manual_seed(seed),
                        dtype=torch.float64)
        start = tnconv.to_mps(w, "out|kh|kw|in", max_bond=4)
        cores = [c.detach().double().numpy() for c in start.arrays]
        cores[0], cores[-1] = cores[0][None], cores[-1][..., None]
        ref = _ls_sweeps(chain_array(w, "out|kh|kw|in"), cores, 3)
        got = tnconv.to_mps(w, "out|kh|kw|in", max_bond=4, sweeps=3).sweep_errors
        np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-10)
        assert ref[-1] < ref[0] - 1e-3  # the sweeps do something here


def _right_canonical_reference(a, ranks):
    """numpy float64: TT-SVD at ``ranks``, then right to left an SVD at every site."""
    dims, rest, r_prev, cores = a.shape, a, 1, []
    for k, d in enumerate(dims[:-1]):
        u, s, vh = np.linalg.svd(rest.reshape(r_prev * d, -1), full_matrices=False)
        cores.append(u[:, : ranks[k]].reshape(r_prev, d, ranks[k]))
        rest, r_prev = s[: ranks[k], None] * vh[: ranks[k]], ranks[k]
    cores.append(rest.reshape(r_prev, dims[-1], 1))
    for k in range(len(cores) - 1, 0, -1):
        r0, d, r1 = cores[k].shape
        u, s, vh = np.linalg.svd(cores[k].reshape(r0, d * r1), full_matrices=False)
        cores[k] = vh.reshape(r0, d, r1)
        cores[k - 1] = cores[k - 1] @ (u * s)
    return cores


@pytest.mark.parametrize("shape", [(32, 16, 1, 1), (16, 1, 3, 3), (6, 4, 3, 3), (1, 5, 3, 3)])
@pytest.mark.parametrize("max_bond", [2, 5, 100])
def test_sites_equal_an_svd_at_every_site_up_to_signs(shape, max_bond):
    """Where the TT-SVD already gives a bond's Schmidt vectors (sites of size 1, steps that
    keep everything after it) no SVD is taken: the sites still equal those of an SVD at every
    site, up to the sign of each bond direction, and are right-orthonormal."""
    w = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    mps = tnconv.to_mps(w, "out|kh|kw|in", max_bond=max_bond)
    ref = _right_canonical_reference(chain_array(w, "out|kh|kw|in"), mps.bond_dims)
    got = [a.reshape(r.shape).numpy() for a, r in zip(mps.arrays, ref, strict=True)]
    left = np.ones(1)
    for k, (g, r) in enumerate(zip(got, ref, strict=True)):
        g = g * left[:, None, None]
        right = np.sign(np.einsum("adb,adb->b", g, r)) if k < len(got) - 1 else np.ones(1)
        np.testing.assert_allclose(g * right, r, atol=1e-10, rtol=0)
        left = right
        if k:
            m = g.reshape(g.shape[0], -1)
            np.testing.assert_allclose(m @ m.T, np.eye(len(m)), atol=1e-12)
