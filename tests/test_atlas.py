"""conv_layers and spectra_atlas against a naive float64 reference."""

import math

import numpy as np
import pytest
import torch
from _kernels import make_kernel
from test_spectra import numpy_matrix
from torch import nn

import tnconv


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, groups=4), nn.ReLU(),
        nn.Conv2d(16, 16, 3, groups=16),  # depthwise
        nn.Conv2d(16, 32, 5, stride=2),
        nn.Conv2d(32, 32, 5, stride=2),  # same shape as a second layer: batched together
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )


def test_conv_layers():
    m = small_model()
    names = [n for n, _ in tnconv.conv_layers(m)]
    assert names == ["0", "2", "4", "6", "7", "8"]
    assert [n for n, _ in tnconv.conv_layers(m, include_linear=True)][-1] == "11"
    with pytest.raises(TypeError):
        list(tnconv.conv_layers(torch.zeros(3)))


def test_atlas_matches_naive_float64_reference():
    m = small_model()
    rows = tnconv.spectra_atlas(m, return_spectra=True)
    assert len(rows) == 6 * 7
    layers = dict(tnconv.conv_layers(m))
    for row in rows:
        w = layers[row["layer"]].weight.detach()
        ref = np.linalg.svd(numpy_matrix(w, row["cut"]), compute_uv=False)
        s = row["spectrum"].double().numpy()
        n = min(len(ref), len(s))
        np.testing.assert_allclose(s[:n], ref[:n], atol=1e-4 * ref[0], rtol=0)
        assert np.all(ref[n:] <= 1e-4 * ref[0])  # size-1 legs dropped only trivial values
        assert row["full_rank"] == len(s)
        p = ref**2 / (ref**2).sum()
        p = p[p > 0]
        assert row["entropy"] == pytest.approx(-(p * np.log2(p)).sum(), abs=1e-4)
        assert row["renyi2"] == pytest.approx(-np.log2((p**2).sum()), abs=1e-4)
        for pct in (1, 10, 50):
            assert row[f"rank_{pct}pct"] == _brute_force_rank(ref, pct / 100), pct
        half = math.ceil(len(s) / 2)
        kept = math.sqrt((ref[:half] ** 2).sum() / (ref**2).sum())
        assert row["norm_loss_half"] == pytest.approx(1 - kept, abs=1e-5)
        assert row["shape"] == "x".join(map(str, w.shape))


def _brute_force_rank(s, max_error):
    """Smallest rank >= 1 whose discarded tail is at most ``max_error`` of the norm (a loop)."""
    total = float((s**2).sum())
    for r in range(1, len(s) + 1):
        if math.sqrt(float((s[r:] ** 2).sum()) / total) <= max_error * (1 + 1e-12):
            return r
    return len(s)


def test_atlas_renyi2_and_ranks_by_hand():
    # one cut, spectrum (10, 2, 0.5, 0.1): sum of squares 104.26, tails after rank 1, 2, 3:
    # sqrt(4.26 / 104.26) = 0.202, sqrt(0.26 / 104.26) = 0.0499, sqrt(0.01 / 104.26) = 0.0098
    w = torch.diag(torch.tensor([10.0, 2.0, 0.5, 0.1], dtype=torch.float64))
    (row,) = tnconv.spectra_atlas({"lin": w}, dtype=torch.float64)
    assert (row["full_rank"], row["rank_1pct"], row["rank_10pct"], row["rank_50pct"]) == (
        4, 3, 2, 1)
    # Renyi-2 = -log2(sum p^2) = log2(104.26^2 / (10^4 + 2^4 + 0.5^4 + 0.1^4))
    assert row["renyi2"] == pytest.approx(math.log2(104.26**2 / 10016.0626), rel=1e-12)
    assert row["renyi2"] == pytest.approx(0.118056, abs=1e-6)
    assert row["norm_loss_half"] == pytest.approx(1 - math.sqrt(104.0 / 104.26), rel=1e-12)


def test_atlas_on_1x1_kernels_dedupes_to_out_in():
    w = make_kernel("conv1x1", torch.float32)
    rows = tnconv.spectra_atlas({"pw": w}, return_spectra=True)
    by_cut = {r["cut"]: r for r in rows}
    s_oi = tnconv.spectrum(w, "out|in,kh,kw")
    for cut in ("out|in,kh,kw", "out,kh|in,kw", "out,kw|in,kh", "out,kh,kw|in"):
        torch.testing.assert_close(by_cut[cut]["spectrum"], s_oi)
    for cut in ("out,in|kh,kw", "out,in,kh|kw", "out,in,kw|kh"):
        assert by_cut[cut]["full_rank"] == 1
        assert by_cut[cut]["entropy"] == 0


def test_atlas_inputs_and_pandas():
    ks = [make_kernel("linear", torch.float32), make_kernel("conv3x3", torch.float32)]
    rows = tnconv.spectra_atlas(ks)
    assert len(rows) == 1 + 7
    df = rows.to_pandas()
    assert {"layer", "shape", "cut", "full_rank", "entropy", "rank_1pct", "rank_10pct",
            "rank_50pct", "norm_loss_half"} <= set(df.columns)
    rows = tnconv.spectra_atlas(ks[1], cuts=["out,kh|in,kw"])
    assert [r["cut"] for r in rows] == ["out,kh|in,kw"]
    with pytest.raises(ValueError, match="no conv layers"):
        tnconv.spectra_atlas(nn.Sequential(nn.ReLU()))
    with pytest.raises(TypeError):
        tnconv.spectra_atlas("resnet")
    with pytest.raises(ValueError):
        tnconv.spectra_atlas(ks[1], cuts="out|in")


def test_atlas_float64():
    w = make_kernel("conv3x3")
    rows = tnconv.spectra_atlas({"a": w}, dtype=torch.float64, return_spectra=True)
    ref = np.linalg.svd(numpy_matrix(w, rows[2]["cut"]), compute_uv=False)
    np.testing.assert_allclose(rows[2]["spectrum"].numpy(), ref, rtol=1e-12)
