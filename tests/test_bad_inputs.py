"""Every bad input of the core API raises TypeError/ValueError naming the problem."""

import math

import pytest
import torch

import tnconv

W = torch.randn(8, 4, 3, 3)
NAN = W.clone()
NAN[0, 0, 0, 0] = math.nan
INF = W.clone()
INF[1, 1, 1, 1] = math.inf

KERNEL_CASES = [
    ("not a tensor", [[1.0, 2.0]], TypeError, "must be a torch.Tensor"),
    ("numpy array", W.numpy(), TypeError, "must be a torch.Tensor"),
    ("integer dtype", torch.ones(4, 4, 3, 3, dtype=torch.int64), TypeError, "floating-point"),
    ("bool dtype", torch.ones(4, 4, dtype=torch.bool), TypeError, "floating-point"),
    ("1-D", torch.ones(5), ValueError, "2 \\(Linear\\)"),
    ("6-D", torch.ones(2, 2, 2, 2, 2, 2), ValueError, "dimensions"),
    ("empty", torch.ones(0, 3, 3, 3), ValueError, "zero-sized"),
    ("NaN", NAN, ValueError, "NaN or Inf"),
    ("Inf", INF, ValueError, "NaN or Inf"),
]

CALLS = {
    "kernel_tn": lambda k: tnconv.kernel_tn(k),
    "spectrum": lambda k: tnconv.spectrum(k, "out|in,kh,kw"),
    "truncate": lambda k: tnconv.truncate(k, "out|in,kh,kw", keep=0.5),
    "to_mps": lambda k: tnconv.to_mps(k),
    "spectra_atlas": lambda k: tnconv.spectra_atlas({"k": k}),
}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize(("label", "kernel", "exc", "msg"), KERNEL_CASES,
                         ids=[c[0] for c in KERNEL_CASES])
def test_bad_kernels(call, label, kernel, exc, msg):
    with pytest.raises(exc, match=msg):
        CALLS[call](kernel)


CUT_CASES = [
    ("out,kx|in,kh,kw", "unknown leg 'kx'"),
    ("out,in|in,kh,kw", "more than once"),
    ("out|in,kh", "leaves out"),
    ("out,in,kh,kw|", "empty side"),
]


@pytest.mark.parametrize(("cut", "msg"), CUT_CASES)
@pytest.mark.parametrize("fn", ["spectrum", "truncate", "to_mps"])
def test_bad_cuts(fn, cut, msg):
    with pytest.raises(ValueError, match=msg):
        getattr(tnconv, fn)(W, cut)


CRITERIA_CASES = [
    (dict(max_bond=0), ValueError, "max_bond must be >= 1"),
    (dict(max_bond=2.5), TypeError, "max_bond must be an int"),
    (dict(keep=0.0), ValueError, "keep must be a fraction in \\(0, 1\\]"),
    (dict(keep=1.5), ValueError, "keep must be a fraction"),
    (dict(max_error=1.0), ValueError, "max_error must be in \\[0, 1\\)"),
    (dict(max_error=-0.1), ValueError, "max_error must be in"),
    (dict(cutoff=-1.0), ValueError, "cutoff must be"),
    (dict(cutoff=1e-3, cutoff_mode="fancy"), ValueError, "unknown cutoff_mode 'fancy'"),
    (dict(cutoff_mode="rel"), ValueError, "without cutoff"),  # conflicting criteria
]


@pytest.mark.parametrize(("criteria", "exc", "msg"), CRITERIA_CASES)
@pytest.mark.parametrize("fn", ["truncate", "to_mps"])
def test_bad_criteria(fn, criteria, exc, msg):
    cut = "out|in,kh,kw" if fn == "truncate" else "out|kh|kw|in"
    with pytest.raises(exc, match=msg):
        getattr(tnconv, fn)(W, cut, **criteria)


def test_bad_split_and_dtype():
    with pytest.raises(ValueError, match="product"):
        tnconv.to_mps(W, split={"out": (3, 3)})
    with pytest.raises(ValueError, match="dtype must be"):
        tnconv.spectrum(W, "out|in,kh,kw", dtype=torch.float16)
