"""kernel_tn (labels, no copies, row-major sub-legs) and the cached opt_einsum contraction."""

import subprocess
import sys

import pytest
import torch
from _kernels import SHAPES, make_kernel

import tnconv
from tnconv.contraction import cache_info, contract


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_kernel_tn_labels_and_data_is_the_tensor(name):
    w = make_kernel(name, torch.float32)
    tn = tnconv.kernel_tn(w)
    (t,) = tn.tensors
    assert t.inds == tnconv.kernel_legs(w)
    assert isinstance(t.data, torch.Tensor)
    assert t.data.data_ptr() == w.data_ptr()  # a view, not a copy or numpy array
    assert "KERNEL" in t.tags


def test_split_sub_legs_are_row_major():
    w = torch.arange(64 * 2, dtype=torch.float64).reshape(64, 2)
    (t,) = tnconv.kernel_tn(w, split={"out": (4, 4, 4)}).tensors
    assert t.inds == ("out0", "out1", "out2", "in")
    a, b, c, j = 1, 2, 3, 1
    assert t.data[a, b, c, j] == w[(a * 4 + b) * 4 + c, j]


def test_kernel_tn_keeps_autograd():
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    (t,) = tnconv.kernel_tn(w).tensors
    t.data.sum().backward()
    assert w.grad is not None and torch.all(w.grad == 1)


def test_contract_matches_einsum_and_caches():
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(s, generator=g) for s in [(3, 4), (4, 5, 2), (2, 3)])
    before = cache_info()
    out = contract([a, b, c], [("i", "k"), ("k", "j", "l"), ("l", "m")], ("i", "j", "m"))
    out2 = contract([a, b, c], [("i", "k"), ("k", "j", "l"), ("l", "m")], ("i", "j", "m"))
    ref = torch.einsum("ik,kjl,lm->ijm", a, b, c)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(out2, ref)
    after = cache_info()
    assert after.hits >= before.hits + 1


def test_contract_tn_round_trip():
    w = make_kernel("conv3x3")
    tn = tnconv.kernel_tn(w, split={"out": (2, 4)})
    back = tnconv.contract_tn(tn, ("out0", "out1", "in", "kh", "kw"), shape=w.shape)
    assert torch.equal(back, w)


def test_contract_shape_mismatch_errors():
    with pytest.raises(ValueError):
        contract([torch.ones(2, 2)], [("i",)], ("i",))
    with pytest.raises(ValueError):
        contract([torch.ones(2, 2)], [("i", "j"), ("j", "k")], ("i",))


def test_import_is_lazy():
    code = (
        "import sys, tnconv; assert 'quimb' not in sys.modules, 'quimb imported eagerly';"
        "assert 'torchvision' not in sys.modules; print(tnconv.__version__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == tnconv.__version__


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tnconv.nope  # noqa: B018
