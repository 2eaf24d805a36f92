"""Truncation along one cut: the Eckart-Young optimum, criteria, reports, dtype and device."""

import math

import numpy as np
import pytest
import torch
from _kernels import SHAPES, make_kernel
from test_spectra import numpy_matrix

import tnconv
from tnconv.decomp import Criteria
from tnconv.truncation import CutSVD


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_error_is_the_discarded_tail_of_a_float64_svd(name):
    w = make_kernel(name)
    for cut in tnconv.all_cuts(w):
        ref = np.linalg.svd(numpy_matrix(w, cut), compute_uv=False)
        for keep in (1.0, 0.5, 0.2):
            wt, rep = tnconv.truncate(w, cut, keep=keep)
            r = rep.rank
            assert r == max(1, math.ceil(keep * len(ref) - 1e-9))
            tail = math.sqrt((ref[r:] ** 2).sum() / (ref**2).sum())
            measured = float((w - wt).norm() / w.norm())
            assert rep.rel_error == pytest.approx(tail, abs=1e-6)
            assert measured == pytest.approx(tail, abs=1e-6)
            assert rep.norm_loss == pytest.approx(1 - float(wt.norm() / w.norm()), abs=1e-6)
            # the truncated kernel has rank r across the cut (and is optimal: tail error)
            s_t = np.linalg.svd(numpy_matrix(wt, cut), compute_uv=False)
            assert (s_t > 1e-9 * ref[0]).sum() == r


def test_report_fields():
    w = make_kernel("conv3x3")
    _, rep = tnconv.truncate(w, "out,kh|in,kw", max_bond=5)
    assert rep.cut == "out,kh|in,kw"
    assert rep.shape == (8, 6, 3, 3)
    assert (rep.rank, rep.full_rank) == (5, 18)
    assert rep.params_after == (24 + 18) * 5
    assert rep.params_before == w.numel()
    assert rep.compression_ratio == pytest.approx(w.numel() / rep.params_after)
    assert rep.params_fraction == pytest.approx(1 / rep.compression_ratio)
    with pytest.warns(FutureWarning, match="renamed 'params_after'"):
        assert rep.params_factored == rep.params_after
    with pytest.warns(FutureWarning, match="renamed 'compression_ratio'"):
        assert rep.compression == rep.compression_ratio
    s = np.linalg.svd(numpy_matrix(w, "out,kh|in,kw"), compute_uv=False)

    def bits(v):  # von Neumann entropy of p = v^2 / sum v^2, from the float64 numpy SVD
        p = v**2 / (v**2).sum()
        return float(-(p * np.log2(p)).sum())

    assert rep.entropy_before == pytest.approx(bits(s), abs=1e-9)
    assert rep.entropy_after == pytest.approx(bits(s[:5]), abs=1e-9)
    d = rep.as_dict()
    assert d["shape"] == "8x6x3x3" and d["rank"] == 5


def test_no_criterion_keeps_everything():
    w = make_kernel("conv5x5")
    wt, rep = tnconv.truncate(w, "out|in,kh,kw")
    assert rep.rank == rep.full_rank
    assert float((wt - w).norm() / w.norm()) < 1e-12


def test_criteria_combine_by_smallest_rank():
    s = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.5, 0.25], dtype=torch.float64)
    assert Criteria(max_bond=4).rank(s) == 4
    assert Criteria(keep=0.5).rank(s) == 3
    err3 = math.sqrt(float((s[3:] ** 2).sum() / (s**2).sum()))
    assert Criteria(max_error=err3).rank(s) == 3
    assert Criteria(max_error=err3, max_bond=2).rank(s) == 2  # max_bond caps
    assert Criteria(keep=0.5, max_bond=5).rank(s) == 3
    assert Criteria(cutoff=0.1).rank(s) == 4  # rel: drop s <= 0.8
    assert Criteria(cutoff=1.0, cutoff_mode="abs").rank(s) == 3
    assert Criteria(cutoff=0.25**2 + 0.5**2, cutoff_mode="sum2").rank(s) == 4
    assert Criteria(cutoff=0.75 / 15.75, cutoff_mode="rsum1").rank(s) == 4
    # sum1: plain tails 0.25, 0.75, 1.75 (ranks 5, 4, 3); sum2 would keep 3 at 1.5 (1.3125)
    assert Criteria(cutoff=1.5, cutoff_mode="sum1").rank(s) == 4
    assert Criteria(cutoff=0.2, cutoff_mode="sum1").rank(s) == 6
    assert Criteria(cutoff=1.75, cutoff_mode="sum1").rank(s) == 3  # a tail equal to the cutoff
    # rsum2: squared tails 0.0625, 0.3125, 1.3125 of 85.3125 (rsum1 at 0.02 would keep 5)
    assert Criteria(cutoff=0.02, cutoff_mode="rsum2").rank(s) == 3
    assert Criteria(cutoff=0.001, cutoff_mode="rsum2").rank(s) == 5
    assert Criteria(cutoff=0.01, cutoff_mode="rsum2").rank(s) == 4
    assert Criteria(max_bond=100).rank(s) == 6


def test_max_error_target_is_met():
    w = make_kernel("conv7x7")
    for target in (0.05, 0.2, 0.5):
        wt, rep = tnconv.truncate(w, "out,kh|in,kw", max_error=target)
        assert rep.rel_error <= target + 1e-12
        assert float((w - wt).norm() / w.norm()) <= target + 1e-9
        _, smaller = tnconv.truncate(w, "out,kh|in,kw", max_bond=rep.rank - 1) if rep.rank > 1 \
            else (None, None)
        assert smaller is None or smaller.rel_error > target


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtype_shape_kept_and_input_untouched(dtype):
    w = make_kernel("conv3x3", dtype)
    before = w.clone()
    wt, _ = tnconv.truncate(w, "out|in,kh,kw", keep=0.5)
    assert wt.dtype == dtype and wt.shape == w.shape and wt.device == w.device
    assert torch.equal(w, before)


def _numpy_truncation(w, cut, r):
    """Best rank-``r`` kernel across ``cut`` from a float64 numpy SVD (the reference)."""
    legs = tnconv.kernel_legs(w)
    perm = [legs.index(n) for g in cut.split("|") for n in g.split(",")]
    u, s, vh = np.linalg.svd(numpy_matrix(w, cut), full_matrices=False)
    m = (u[:, :r] * s[:r]) @ vh[:r]
    return m.reshape([w.shape[i] for i in perm]).transpose(np.argsort(perm)), s


def test_cut_svd_reuse_matches_numpy_reference():
    w = make_kernel("conv3x3")
    cut = "out,kw|in,kh"
    svd = CutSVD(w, cut)
    for r in (1, 4, 9, 18):
        ref, s = _numpy_truncation(w, cut, r)
        np.testing.assert_allclose(svd.reconstruct(r).numpy(), ref, atol=1e-12 * s[0], rtol=0)
        rep = svd.report(r)
        assert (rep.rank, rep.full_rank) == (r, 18)
        assert rep.rel_error == pytest.approx(math.sqrt((s[r:] ** 2).sum() / (s**2).sum()),
                                              abs=1e-12)
        kept = math.sqrt((s[:r] ** 2).sum() / (s**2).sum())
        assert rep.norm_loss == pytest.approx(1 - kept, abs=1e-12)
        assert rep.params_after == (24 + 18) * r
    with pytest.raises(ValueError, match=r"rank must be in \[1, 18\]"):
        svd.reconstruct(19)


def test_chain_cut_is_refused():
    with pytest.raises(ValueError, match="to_mps|bipartition"):
        tnconv.truncate(make_kernel("conv3x3"), "out|kh|kw|in", keep=0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_stays_on_device():
    w = make_kernel("conv3x3", torch.float32).cuda()
    wt, _ = tnconv.truncate(w, "out|in,kh,kw", keep=0.5)
    assert wt.is_cuda
    assert tnconv.spectrum(w, "out|in,kh,kw").is_cuda
