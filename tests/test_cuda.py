"""CUDA: every stage keeps tensors on the GPU and agrees with the CPU (skipped without a GPU).

Run on a GPU machine with ``benchmarks/gpu_checks.sh`` (or ``python -m pytest tests/test_cuda.py``).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tnconv

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(autouse=True)
def _no_tf32():
    """Exact float32 on the GPU: PyTorch lets cuDNN convolutions use TF32 by default (10-bit
    mantissa), which moved a factored MPS layer 7e-4 away from ``nn.Conv2d`` on an H200."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _kernel(*shape: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(*shape, generator=g)


def test_kernel_tn_data_stays_on_cuda():
    w = _kernel(16, 8, 3, 3).cuda()
    tn = tnconv.kernel_tn(w, split={"out": (4, 4)})
    assert all(isinstance(t.data, torch.Tensor) and t.data.is_cuda for t in tn)


def test_spectrum_and_truncate_match_cpu():
    w = _kernel(32, 16, 3, 3)
    s_cpu = tnconv.spectrum(w, "out,kh|in,kw")
    s_gpu = tnconv.spectrum(w.cuda(), "out,kh|in,kw")
    assert s_gpu.is_cuda
    torch.testing.assert_close(s_gpu.cpu(), s_cpu, rtol=1e-4, atol=1e-5 * float(s_cpu[0]))
    wt, rep = tnconv.truncate(w.cuda(), "out,kh|in,kw", keep=0.5)
    wt_cpu, rep_cpu = tnconv.truncate(w, "out,kh|in,kw", keep=0.5)
    assert wt.is_cuda and rep.rank == rep_cpu.rank
    torch.testing.assert_close(wt.cpu(), wt_cpu, rtol=1e-4, atol=1e-4)


def test_mps_round_trip_and_gradient_on_cuda():
    w = _kernel(16, 8, 3, 3).cuda().requires_grad_(True)
    mps = tnconv.to_mps(w, "out|kh|kw|in")
    k = mps.to_kernel()
    assert k.is_cuda and k.dtype == w.dtype
    assert float((k - w).norm() / w.norm()) < 1e-5
    (k**2).sum().backward()
    assert w.grad is not None and w.grad.is_cuda and torch.isfinite(w.grad).all()


def test_atlas_on_cuda_model():
    model = tnconv.cnn4(10, 1, widths=(8, 16, 16, 16)).cuda()
    cpu_rows = tnconv.spectra_atlas(model.cpu(), cuts="all").to_pandas()
    gpu_rows = tnconv.spectra_atlas(model.cuda(), cuts="all").to_pandas()
    assert list(gpu_rows["full_rank"]) == list(cpu_rows["full_rank"])
    torch.testing.assert_close(torch.tensor(gpu_rows["entropy"].to_numpy()),
                               torch.tensor(cpu_rows["entropy"].to_numpy()), atol=1e-3, rtol=0)


@pytest.mark.parametrize("cls", ["MPSConv2d", "TuckerConv2d"])
@pytest.mark.parametrize("path", ["dense", "factored"])
def test_layers_match_conv_on_cuda(cls, path):
    conv = nn.Conv2d(8, 16, 3, padding=1).cuda()
    layer = getattr(tnconv, cls).from_conv(conv)
    layer.path = path
    x = torch.randn(2, 8, 12, 12, device="cuda")
    y = layer(x)
    assert y.is_cuda
    torch.testing.assert_close(y, conv(x), rtol=1e-4, atol=1e-4)
    y.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())


def test_sweep_on_cuda_equals_full_evaluation():
    torch.manual_seed(0)
    model = tnconv.cnn4(10, 1, widths=(8, 16, 16, 16)).cuda().eval()
    x = torch.randn(64, 1, 32, 32, device="cuda")
    y = torch.randint(0, 10, (64,), device="cuda")
    fast = tnconv.sweep(model, (x, y), cuts=["out|in,kh,kw"], levels=(1.0, 0.25),
                        amp=False, progress=False).to_pandas()
    naive = tnconv.sweep(model, (x, y), cuts=["out|in,kh,kw"], levels=(1.0, 0.25), amp=False,
                         use_prefix=False, reuse_svd=False, progress=False).to_pandas()
    assert list(fast["accuracy"]) == list(naive["accuracy"])
