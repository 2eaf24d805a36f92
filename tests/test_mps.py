"""MPS chains: exact round trips, bond spectra, the TT-SVD bound, autograd, structure."""

import math

import numpy as np
import pytest
import torch
from _kernels import SHAPES, make_kernel, tolerance

import tnconv


def chains(legs):
    """A few chains per kernel: the default and two others with multi-leg sites."""
    out = [None]
    if len(legs) >= 3:
        out.append("|".join(reversed(legs)))
        out.append(",".join(legs[:2]) + "|" + "|".join(legs[2:]))
    return out


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def numpy_chain(w, chain, rank_of):
    """Reference TT-SVD in float64 numpy, left to right: at bond ``k`` the current
    tensor is replaced by its best rank-``rank_of(s)`` approximation across the cut
    ``sites[:k+1] | sites[k+1:]`` (Eckart-Young, numpy SVD). Returns the kernel and the
    discarded singular values of every bond."""
    legs = tnconv.kernel_legs(w)
    sites = [g.split(",") for g in chain.split("|")]
    perm = [legs.index(n) for g in sites for n in g]
    shape = [w.shape[i] for i in perm]
    a = w.double().numpy().transpose(perm)
    dropped = []
    for k in range(len(sites) - 1):
        rows = math.prod(w.shape[legs.index(n)] for g in sites[: k + 1] for n in g)
        u, s, vh = np.linalg.svd(a.reshape(rows, -1), full_matrices=False)
        r = rank_of(s)
        a = ((u[:, :r] * s[:r]) @ vh[:r]).reshape(shape)
        dropped.append(s[r:])
    return a.transpose(np.argsort(perm)), dropped


def numpy_contract(mps):
    """The chain's dense kernel by a plain numpy einsum of its cores (not via to_kernel)."""
    names = sorted({i for ix in mps.inds for i in ix})
    letter = {n: chr(ord("a") + i) for i, n in enumerate(names)}
    eq = ",".join("".join(letter[i] for i in ix) for ix in mps.inds)
    eq += "->" + "".join(letter[i] for i in mps.physical_legs)
    out = np.einsum(eq, *[a.detach().double().numpy() for a in mps.arrays], optimize=True)
    return out.reshape(mps.shape)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_round_trip_exact_every_cut_and_chain(name, dtype):
    w = make_kernel(name, dtype)
    legs = tnconv.kernel_legs(w)
    for cut in [*tnconv.all_cuts(legs), *chains(legs)]:
        mps = tnconv.to_mps(w, cut)
        back = mps.to_kernel()
        assert back.dtype == dtype and back.shape == w.shape
        assert rel(back, w) <= tolerance(dtype), cut
        assert rel(torch.from_numpy(numpy_contract(mps)), w) <= tolerance(dtype), cut
        assert mps.rel_error <= tolerance(dtype)


def test_split_chain_round_trip_and_sub_leg_sites():
    w = make_kernel("conv3x3", torch.float64)
    mps = tnconv.to_mps(w, split={"out": (2, 2, 2)})
    assert mps.sites == (("out0",), ("out1",), ("out2",), ("kh",), ("kw",), ("in",))
    assert rel(mps.to_kernel(), w) < 1e-12
    mps = tnconv.to_mps(torch.randn(16, 8), split="binary", dtype=torch.float64)
    assert len(mps.sites) == 7
    assert mps.physical_legs == ("out0", "out1", "out2", "out3", "in0", "in1", "in2")


def test_bond_spectra_equal_cut_spectra():
    w = make_kernel("conv5x5")
    mps = tnconv.to_mps(w, "out|kh|kw|in", max_bond=2)  # truncation must not change them
    refs = [tnconv.spectrum(w, c) for c in ("out|in,kh,kw", "out,kh|in,kw", "out,kh,kw|in")]
    assert len(mps.bond_spectra) == 3
    for s, ref in zip(mps.bond_spectra, refs):
        torch.testing.assert_close(s, ref, atol=1e-10 * float(ref[0]), rtol=0)


def test_network_structure():
    w = make_kernel("conv3x3")
    mps = tnconv.to_mps(w, max_bond=3)
    tn = mps.tn
    assert len(tn.tensors) == 4
    for k, site in enumerate(mps.sites):
        t = tn[f"I{k}"]
        assert "SITE" in t.tags
        expected = ((f"b{k - 1}",) if k else ()) + site + ((f"b{k}",) if k < 3 else ())
        assert t.inds == expected
        assert isinstance(t.data, torch.Tensor)
    assert set(tn.outer_inds()) == {"out", "in", "kh", "kw"}
    assert mps.bond_dims == [3, 3, 3]
    assert mps.num_params == sum(a.numel() for a in mps.arrays)
    assert mps.compression_ratio == pytest.approx(w.numel() / mps.num_params)
    # the quimb network contracts to the same kernel as to_kernel()
    dense = tnconv.contract_tn(tn, ("out", "in", "kh", "kw"))
    torch.testing.assert_close(dense, mps.to_kernel())


@pytest.mark.parametrize("max_error", [0.05, 0.2, 0.4, 0.7])
@pytest.mark.parametrize("name", ["conv3x3", "conv7x7", "conv3d"])
def test_tt_svd_bound_holds(name, max_error):
    w = make_kernel(name)
    mps = tnconv.to_mps(w, max_error=max_error)
    assert mps.error_bound == max_error
    assert mps.rel_error <= max_error + 1e-12
    # reference: each of the n - 1 bonds keeps the smallest rank whose tail is at most
    # max_error / sqrt(n - 1) of ||W|| (brute-force loop over the numpy spectrum)
    norm = float(w.norm())
    per_bond = max_error / math.sqrt(len(mps.sites) - 1)

    def rank_of(s):
        return next(r for r in range(1, len(s) + 1)
                    if math.sqrt((s[r:] ** 2).sum()) <= per_bond * norm * (1 + 1e-12))

    # the global allocation never needs more parameters than this even split
    ref, dropped = numpy_chain(w, mps.cut, rank_of)
    full = [len(s) for s in mps.bond_spectra]
    even = [f - len(d) for f, d in zip(full, dropped)]
    dims = [math.prod(mps.arrays[k].shape[1 if k else 0: -1 if k < len(mps.sites) - 1 else None])
            for k in range(len(mps.sites))]
    assert mps.num_params <= sum(a * d * b for a, d, b in zip([1, *even], dims, [*even, 1]))
    assert rel(torch.from_numpy(numpy_contract(mps)), w) == pytest.approx(mps.rel_error, abs=1e-10)


def test_errors_are_orthogonal_sum_of_discarded_weights():
    # in canonical form the squared discarded weights of all bonds add up exactly
    w = make_kernel("conv7x7")
    mps = tnconv.to_mps(w, max_bond=4)
    assert mps.bond_dims == [4, 4, 3]
    ref, dropped = numpy_chain(w, mps.cut, lambda s: min(4, len(s)))
    norm2 = float((w**2).sum())
    discarded = sum(float((d**2).sum()) for d in dropped)
    assert discarded > 0.05 * norm2  # a real truncation, spread over the bonds
    assert sum(len(d) > 0 for d in dropped) == 2
    assert mps.rel_error == pytest.approx(math.sqrt(discarded / norm2), rel=1e-9)
    measured = float(((w.numpy() - numpy_contract(mps)) ** 2).sum())
    assert measured == pytest.approx(discarded, rel=1e-9)
    np.testing.assert_allclose(mps.to_kernel().numpy(), ref, atol=1e-10 * math.sqrt(norm2))


def test_keep_and_max_bond_per_bond():
    w = make_kernel("conv5x5")  # 6x4x5x5, chain out|kh|kw|in: full bonds 6, 24?, 4
    full = [int(s.numel()) for s in tnconv.to_mps(w).bond_spectra]
    mps = tnconv.to_mps(w, keep=0.5)
    assert mps.bond_dims == [math.ceil(f / 2) for f in full]
    mps = tnconv.to_mps(w, max_bond=1)
    assert mps.bond_dims == [1, 1, 1]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_returns_own_dtype(dtype):
    w = make_kernel("conv3x3", dtype)
    mps = tnconv.to_mps(w)
    assert mps.arrays[0].dtype == torch.float32
    out = mps.to_kernel()
    assert out.dtype == dtype
    assert rel(out, w) < 1e-2


def test_gradients_flow_to_cores_and_kernel():
    w = make_kernel("conv3x3").requires_grad_()
    mps = tnconv.to_mps(w, max_bond=3)
    cores = [a.detach().clone().requires_grad_() for a in mps.arrays]
    k = tnconv.contract(cores, mps.inds, mps.physical_legs, shape=mps.shape)
    k.square().sum().backward()
    assert all(c.grad is not None and torch.isfinite(c.grad).all() for c in cores)
    mps.to_kernel().square().sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reported_error_equals_measured_one(dtype):
    # truncated TT-SVD chains take rel_error from the discarded weights (an orthogonal
    # projection), the others measure it: both agree with a direct numpy measurement
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    for name in ("conv3x3", "conv7x7", "conv3d", "linear"):
        w = make_kernel(name, dtype)
        for crit in ({"max_bond": 1}, {"max_bond": 3}, {"keep": 0.6}, {"cutoff": 0.3},
                     {"max_error": 0.3}, {"max_bond": 100}, {}):
            for cut in (None, "|".join(reversed(tnconv.kernel_legs(w)))):
                mps = tnconv.to_mps(w, cut, **crit)
                measured = rel(torch.from_numpy(numpy_contract(mps)), w)
                assert mps.rel_error == pytest.approx(measured, rel=tol, abs=1e-7), (name, crit)
    w = make_kernel("conv3x3")  # measured: built at norm 1, or in a narrower dtype
    for mps, scale in [(tnconv.to_mps(w * 1e200, max_bond=3), 1e200),
                       (tnconv.to_mps(w, max_bond=3, dtype=torch.float32), 1.0)]:
        assert mps.rel_error == pytest.approx(rel(mps.to_kernel() / scale, w), rel=1e-9)
        assert mps.rel_error == pytest.approx(tnconv.to_mps(w, max_bond=3).rel_error, rel=1e-5)


def test_network_built_on_demand_and_followed():
    w = make_kernel("conv3x3")
    mps = tnconv.to_mps(w, max_bond=3)
    arrays, back = mps.arrays, mps.to_kernel()
    tn = mps.tn  # built now, holding the same site tensors
    assert tn is mps.tn and all(t.data is a for t, a in zip(tn.tensors, arrays))
    assert mps.bond_dims == [3, 3, 3] and mps.inds == [t.inds for t in tn.tensors]
    tn["I0"].modify(data=2 * tn["I0"].data)  # changes through the network show everywhere
    torch.testing.assert_close(mps.to_kernel(), 2 * back)
    tn["I1"].transpose_(*reversed(tn["I1"].inds))  # contracted by index names then
    torch.testing.assert_close(mps.to_kernel(), 2 * back)
    assert mps.factors[1] is tn["I1"].data


def test_input_not_modified():
    w = make_kernel("conv3x3", torch.float32)
    before = w.clone()
    tnconv.to_mps(w, max_bond=2)
    assert torch.equal(w, before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    w = make_kernel("conv3x3", torch.float32).cuda()
    mps = tnconv.to_mps(w, max_bond=4)
    assert all(a.is_cuda for a in mps.arrays)
    assert mps.to_kernel().is_cuda
