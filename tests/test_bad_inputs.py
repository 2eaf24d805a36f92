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


# -- issue 15: every other public entry point ---------------------------------------------------

import importlib  # noqa: E402

from torch import nn  # noqa: E402

from tnconv import cuts as _cuts  # noqa: E402
from tnconv import decomp as _decomp  # noqa: E402
from tnconv import legs as _legs  # noqa: E402
from tnconv import spectra as _spectra  # noqa: E402
from tnconv.data import ImageDataset, as_tensors  # noqa: E402
from tnconv.layers import CPConv2d, MPSConv2d, TuckerConv2d  # noqa: E402

_contract = importlib.import_module("tnconv.contraction").contract
LEGS4 = ("out", "in", "kh", "kw")
S = torch.tensor([4.0, 3.0, 1.0])
UNSORTED = torch.tensor([1.0, 2.0, 4.0])
W16 = torch.randn(16, 4, 3, 3)


def _conv(nan: bool = False) -> nn.Conv2d:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3)
    if nan:
        with torch.no_grad():
            conv.weight[0, 0, 0, 0] = math.nan
    return conv


def _nan_model() -> nn.Module:
    return nn.Sequential(_conv(nan=True))


def _ds(n: int = 6, labels: torch.Tensor | None = None) -> ImageDataset:
    y = torch.arange(n) % 10 if labels is None else labels
    return ImageDataset(torch.zeros(n, 1, 8, 8), y, "mnist", "test")


def _pair(x_shape=(4, 1, 8, 8), y=None):
    return torch.zeros(x_shape), (torch.zeros(x_shape[0], dtype=torch.long) if y is None else y)


def _set_path(layer, value):
    layer.path = value


# (id, call, exception, message naming the argument)
BAD_CALLS = [
    # legs: split= and factorize
    ("split float sizes", lambda: tnconv.to_mps(W, split={"out": (2.7, 3.9)}), TypeError,
     "split sizes of leg 'out' must be ints"),
    ("split string sizes", lambda: tnconv.to_mps(W16, split={"out": "44"}), TypeError,
     "split sizes of leg 'out' must be"),
    ("split bool size", lambda: tnconv.to_mps(W, split={"out": (True, 8)}), TypeError,
     "split sizes of leg 'out' must be ints"),
    ("split float leg size", lambda: tnconv.to_mps(W, split={"out": 8.0}), TypeError,
     "split sizes of leg 'out'"),
    ("split zero size", lambda: tnconv.to_mps(W, split={"out": (0, 8)}), ValueError,
     "split sizes of leg 'out' must be positive"),
    ("split unknown leg", lambda: tnconv.to_mps(W, split={"ch": (2, 4)}), ValueError,
     "split names unknown leg 'ch'"),
    ("split unknown mode", lambda: tnconv.spectrum(W, "out|in,kh,kw", split="ternary"),
     ValueError, "unknown split 'ternary'"),
    ("split wrong type", lambda: tnconv.spectrum(W, "out|in,kh,kw", split=5), TypeError,
     "split must be None"),
    ("factorize float", lambda: _legs.factorize(12.5), TypeError, "n must be an int"),
    ("factorize bool", lambda: _legs.factorize(True), TypeError, "n must be an int"),
    ("factorize zero", lambda: _legs.factorize(0), ValueError, "n .*must be >= 1"),
    ("factorize mode", lambda: _legs.factorize(12, "ternary"), ValueError,
     "unknown split mode 'ternary'"),
    ("meta kernel spectrum", lambda: tnconv.spectrum(torch.empty(8, 4, 3, 3, device="meta"),
                                                     "out|in,kh,kw"), ValueError, "meta"),
    ("meta kernel to_mps", lambda: tnconv.to_mps(torch.empty(8, 4, 3, 3, device="meta")),
     ValueError, "kernel is on the meta device"),
    # cuts
    ("all_cuts string", lambda: tnconv.all_cuts("out,in"), TypeError,
     "legs must be a sequence of leg names"),
    ("all_cuts None", lambda: tnconv.all_cuts(None), TypeError, "legs must be"),
    ("all_cuts one leg", lambda: tnconv.all_cuts(("out",)), ValueError, "at least two legs"),
    ("all_cuts duplicates", lambda: tnconv.all_cuts(("out", "out")), ValueError,
     "duplicate leg names"),
    ("all_cuts non-string leg", lambda: tnconv.all_cuts(("out", 3)), TypeError,
     "leg names must be strings"),
    ("all_cuts bad ndim", lambda: tnconv.all_cuts(7), ValueError, "7 dimensions"),
    ("default_chain string", lambda: _cuts.default_chain("out"), TypeError,
     "legs must be a sequence of leg names"),
    ("default_chain one leg", lambda: _cuts.default_chain(("out",)), ValueError,
     "at least two legs"),
    ("default_chain None", lambda: _cuts.default_chain(None), TypeError, "legs must be"),
    ("parse_cut bytes", lambda: _cuts.parse_cut(b"out|in,kh,kw", LEGS4), TypeError,
     "cut must be a string"),
    ("parse_cut int", lambda: _cuts.parse_cut(5, LEGS4), TypeError, "cut must be a string"),
    ("parse_cut empty", lambda: _cuts.parse_cut("", LEGS4), ValueError, "empty cut"),
    ("parse_cut bad group", lambda: _cuts.parse_cut([("out", "kh"), 5], LEGS4), TypeError,
     "cut groups must be"),
    ("parse_cut one group", lambda: _cuts.parse_cut("out,in,kh,kw", LEGS4), ValueError,
     "at least 2"),
    ("spectrum chain", lambda: tnconv.spectrum(W, "out|kh|kw|in"), ValueError,
     "bipartition"),
    # spectra and tails
    ("rank_for_error unsorted", lambda: tnconv.rank_for_error(UNSORTED, 0.5), ValueError,
     "s must be sorted in descending order"),
    ("norm_curve unsorted", lambda: _spectra.norm_curve(UNSORTED), ValueError,
     "s must be sorted in descending order"),
    ("norm_loss unsorted", lambda: _decomp.norm_loss(UNSORTED, 1), ValueError,
     "s must be sorted in descending order"),
    ("norm_loss rank float", lambda: _decomp.norm_loss(S, 1.5), TypeError,
     "rank must be an int"),
    ("norm_loss rank too big", lambda: _decomp.norm_loss(S, 4), ValueError,
     "rank must be in 0..3"),
    ("rank_for_error list", lambda: tnconv.rank_for_error([4.0, 3.0], 0.5), TypeError,
     "s must be a torch.Tensor"),
    ("rank_for_error 2-D", lambda: tnconv.rank_for_error(torch.ones(2, 2), 0.5), ValueError,
     "s must be a non-empty 1-D"),
    ("rank_for_error negative", lambda: tnconv.rank_for_error(torch.tensor([1.0, -1.0]), 0.5),
     ValueError, "non-negative"),
    ("rank_for_error int", lambda: tnconv.rank_for_error(torch.tensor([2, 1]), 0.5), TypeError,
     "s must be floating point"),
    ("rank_for_error max_error", lambda: tnconv.rank_for_error(S, 1.5), ValueError,
     "max_error must be in"),
    ("rank_for_error max_error str", lambda: tnconv.rank_for_error(S, "0.1"), TypeError,
     "max_error must be a number"),
    ("entropy alpha nan", lambda: tnconv.entropy(S, alpha=math.nan), ValueError,
     "alpha must be"),
    ("entropy alpha negative", lambda: tnconv.entropy(S, alpha=-1), ValueError,
     "alpha must be"),
    ("entropy alpha str", lambda: tnconv.entropy(S, alpha="2"), TypeError, "alpha must be"),
    ("entropy base nan", lambda: tnconv.entropy(S, base=math.nan), ValueError, "base must be"),
    ("entropy base inf", lambda: tnconv.entropy(S, base=math.inf), ValueError, "base must be"),
    ("entropy base one", lambda: tnconv.entropy(S, base=1), ValueError, "base must be"),
    ("entropy base bool", lambda: tnconv.entropy(S, base=True), TypeError, "base must be"),
    ("entropy unsorted ok, NaN not", lambda: tnconv.entropy(torch.tensor([1.0, math.nan])),
     ValueError, "s must hold finite"),
    # contraction
    ("contract size mismatch", lambda: _contract(
        [torch.ones(2, 3), torch.ones(4, 5)], [("i", "k"), ("k", "j")], ("i", "j")),
     ValueError, "index 'k' has size 3 in array 0 but 4 in array 1"),
    ("contract unknown output", lambda: _contract(
        [torch.ones(2, 3), torch.ones(3, 5)], [("i", "k"), ("k", "j")], ("i", "z")),
     ValueError, "output index 'z' is on no array"),
    ("contract repeated output", lambda: _contract(
        [torch.ones(2, 3), torch.ones(3, 5)], [("i", "k"), ("k", "j")], ("i", "i")),
     ValueError, "output index 'i' appears more than once"),
    ("contract count", lambda: _contract([torch.ones(2, 3)], [("i", "k"), ("k", "j")], ("i",)),
     ValueError, "got 1 arrays but 2 index tuples"),
    ("contract rank", lambda: _contract([torch.ones(2, 3)], [("i",)], ("i",)), ValueError,
     "indices \\('i',\\) do not match shape"),
    ("contract not tensor", lambda: _contract([[1.0, 2.0]], [("i",)], ("i",)), TypeError,
     "arrays must be torch tensors"),
    ("contract shape", lambda: _contract([torch.ones(2, 3)], [("i", "j")], ("i", "j"),
                                         shape=(5,)), ValueError, "shape \\(5,\\)"),
    # atlas
    ("atlas no cuts", lambda: tnconv.spectra_atlas({"a": W}, cuts=[]), ValueError,
     "cuts must not be empty"),
    ("atlas NaN model", lambda: tnconv.spectra_atlas(_nan_model()), ValueError,
     "'0'.* contains NaN or Inf"),
    ("atlas cut string", lambda: tnconv.spectra_atlas({"a": W}, cuts="out|in,kh,kw"),
     ValueError, "cuts must be 'all' or a list"),
    ("atlas cut not string", lambda: tnconv.spectra_atlas({"a": W}, cuts=[5]), TypeError,
     "cut must be a string"),
    ("atlas no layers", lambda: tnconv.spectra_atlas(nn.Sequential(nn.ReLU())), ValueError,
     "no conv layers"),
    ("atlas wrong type", lambda: tnconv.spectra_atlas(5), TypeError, "spectra_atlas takes"),
    # layers
    ("mps ratio inf", lambda: MPSConv2d.from_conv(_conv(), ratio=math.inf), ValueError,
     "ratio must be a finite number > 1"),
    ("mps ratio nan", lambda: MPSConv2d.from_conv(_conv(), ratio=math.nan), ValueError,
     "ratio must be a finite number > 1"),
    ("mps ratio str", lambda: MPSConv2d.from_conv(_conv(), ratio="4"), TypeError,
     "ratio must be a finite number > 1"),
    ("mps ratio below one", lambda: MPSConv2d.from_conv(_conv(), ratio=0.5), ValueError,
     "ratio must be > 1"),
    ("cp tol nan", lambda: CPConv2d(4, 8, 3, tol=math.nan), ValueError, "tol must be"),
    ("cp tol negative", lambda: CPConv2d(4, 8, 3, tol=-1.0), ValueError, "tol must be"),
    ("cp tol str", lambda: CPConv2d(4, 8, 3, tol="0.1"), TypeError, "tol must be"),
    ("cp rank zero", lambda: CPConv2d(4, 8, 3, rank=0), ValueError, "rank must be >= 1"),
    ("mps NaN conv", lambda: MPSConv2d.from_conv(_conv(nan=True)), ValueError,
     "conv.weight contains NaN or Inf"),
    ("tucker NaN conv", lambda: TuckerConv2d.from_conv(_conv(nan=True)), ValueError,
     "conv.weight contains NaN or Inf"),
    ("cp NaN conv", lambda: CPConv2d.from_conv(_conv(nan=True)), ValueError,
     "conv.weight contains NaN or Inf"),
    ("mps factored without form", lambda: MPSConv2d.from_conv(
        _conv(), cut="out,in|kh,kw", path="factored"), ValueError, "path='factored'"),
    ("mps factored split", lambda: MPSConv2d.from_conv(
        _conv(), split={"out": (2, 4)}, path="factored"), ValueError, "path='factored'"),
    ("tucker factored grouped", lambda: TuckerConv2d(4, 8, 3, groups=2, path="factored"),
     ValueError, "path='factored'"),
    ("path setter without form", lambda: _set_path(
        MPSConv2d.from_conv(_conv(), cut="out,in|kh,kw"), "factored"), ValueError,
     "path='factored'"),
    ("unknown path", lambda: MPSConv2d.from_conv(_conv(), path="fast"), ValueError,
     "unknown path 'fast'"),
    ("from_conv linear", lambda: TuckerConv2d.from_conv(nn.Linear(4, 4)), TypeError,
     "conv must be a torch.nn.Conv2d"),
    # data
    ("subset float", lambda: _ds().subset(2.5), TypeError, "n_or_indices must be"),
    ("subset empty", lambda: _ds().subset([]), ValueError, "n_or_indices .*empty"),
    ("subset zero", lambda: _ds().subset(0), ValueError, "n_or_indices.*subset size"),
    ("subset float indices", lambda: _ds().subset([1.5, 2.0]), TypeError,
     "n_or_indices must be"),
    ("subset out of range", lambda: _ds().subset([0, 99]), ValueError,
     "subset indices must be in range"),
    ("dataset float labels", lambda: _ds(labels=torch.zeros(6)), TypeError,
     "labels must be integer class indices"),
    ("dataset label >= classes", lambda: _ds(labels=torch.tensor([0, 1, 2, 3, 4, 10])),
     ValueError, "labels must be in 0..9"),
    ("as_tensors float labels", lambda: as_tensors(_pair(y=torch.zeros(4))), TypeError,
     "labels must be integer class indices"),
    ("as_tensors 2-D labels", lambda: as_tensors(_pair(y=torch.zeros(4, 2, dtype=torch.long))),
     ValueError, "labels must be 1-D"),
    ("as_tensors 3-D images", lambda: as_tensors(_pair(x_shape=(4, 8, 8))), ValueError,
     "images must be 4-D"),
    ("as_tensors negative label", lambda: as_tensors(_pair(y=torch.tensor([0, 1, -1, 2]))),
     ValueError, "labels must be in 0"),
    ("as_tensors label >= classes", lambda: as_tensors(_pair(y=torch.tensor([0, 1, 2, 10])),
                                                       num_classes=10),
     ValueError, "labels must be in 0..9"),
    ("as_tensors dataset labels", lambda: as_tensors(_ds(), num_classes=3), ValueError,
     "labels must be in 0..2"),
    ("as_tensors channels", lambda: as_tensors(_pair(), in_channels=3), ValueError,
     "images have 1 channel"),
    ("as_tensors too small", lambda: as_tensors(_pair(), min_size=16), ValueError,
     "images of 8x8 are too small"),
    ("as_tensors length", lambda: as_tensors((torch.zeros(4, 1, 8, 8), torch.zeros(
        3, dtype=torch.long))), ValueError, "as many labels as images"),
    ("as_tensors string", lambda: as_tensors("data"), TypeError, "data must be"),
    ("as_tensors not tensors", lambda: as_tensors(([1.0], [1])), TypeError,
     "images and labels must be torch tensors"),
]


def _narrow_cnn4() -> nn.Module:
    torch.manual_seed(0)
    return tnconv.cnn4(10, 1, widths=(4, 8, 8, 8))


_IMAGE_CASES = [  # (what, images, message) for images that cannot go into a 1-channel cnn4
    ("channels", torch.randn(8, 3, 32, 32), "images have 3 channels, the model takes "
                                            "in_channels=1"),
    ("too small for the pooling", torch.randn(8, 1, 8, 8),
     r"the model cannot run on images of shape \(1, 8, 8\)"),
    ("smaller than the kernel", torch.randn(8, 1, 2, 2), "images of 2x2 are too small"),
]
_ENTRY_POINTS = {
    "evaluate": lambda m, d: tnconv.evaluate(m, d),
    "fit": lambda m, d: tnconv.fit(m, d, epochs=1, progress=False),
    "sweep": lambda m, d: tnconv.sweep(m, d, cuts=["out|in,kh,kw"], levels=[0.5],
                                       progress=False),
}
BAD_CALLS += [
    (f"{entry} images {what}",
     lambda entry=entry, x=x: _ENTRY_POINTS[entry](_narrow_cnn4(),
                                                   (x, torch.randint(0, 10, (8,)))),
     ValueError, msg)
    for entry in _ENTRY_POINTS for what, x, msg in _IMAGE_CASES
]


@pytest.mark.parametrize(("call", "exc", "msg"), [c[1:] for c in BAD_CALLS],
                         ids=[c[0] for c in BAD_CALLS])
def test_bad_calls(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()


def test_enough_distinct_bad_calls():
    distinct = (len(KERNEL_CASES) * len(CALLS) + len(CUT_CASES) * 3
                + len(CRITERIA_CASES) * 2 + 2 + len(BAD_CALLS))
    assert len({c[0] for c in BAD_CALLS}) == len(BAD_CALLS)
    assert distinct >= 80


def test_cli_spectra_rejects_empty_cuts(capsys):
    from tnconv.cli import main

    assert main(["spectra", "cnn4", "--cuts", ""]) != 0
    assert "--cuts" in capsys.readouterr().err


def test_idx_labels_beyond_class_count(tmp_path):
    import gzip

    import numpy as np

    from tnconv.data import load_dataset

    folder = tmp_path / "FashionMNIST" / "raw"
    folder.mkdir(parents=True)

    def idx(path, arr):
        header = bytes([0, 0, 8, arr.ndim]) + b"".join(
            int(d).to_bytes(4, "big") for d in arr.shape)
        with gzip.open(path, "wb") as f:
            f.write(header + arr.astype(np.uint8).tobytes())

    idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28)))
    idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([0, 3, 12]))
    with pytest.raises(ValueError, match="labels of fashion-mnist .* must be in 0..9"):
        load_dataset("fashion-mnist", "test", root=tmp_path)


@pytest.mark.parametrize("scale", [1e160, 1e300])
def test_huge_float64_spectra_stay_finite(scale):
    """Squares of singular values above ~1e154 overflow float64: every tail is scaled first."""
    s = torch.tensor([4.0, 3.0], dtype=torch.float64)
    big = s * scale
    assert torch.allclose(_decomp.tail_errors(big), _decomp.tail_errors(s))
    assert _decomp.norm_loss(big, 1) == pytest.approx(_decomp.norm_loss(s, 1))
    assert tnconv.rank_for_error(big, 0.6) == 1
    assert tnconv.rank_for_error(big, 0.5, norm=5.0 * scale) == 2
    curve, ref = _spectra.norm_curve(big), _spectra.norm_curve(s)
    assert torch.allclose(curve.rel_error, ref.rel_error)
    assert torch.allclose(curve.norm_loss, ref.norm_loss)
    for alpha in (1, 2, math.inf):
        assert float(tnconv.entropy(big, alpha=alpha)) == pytest.approx(
            float(tnconv.entropy(s, alpha=alpha)))
    torch.manual_seed(0)
    w = torch.randn(8, 4, 3, 3, dtype=torch.float64)
    _, rep = tnconv.truncate(w * scale, "out|in,kh,kw", max_bond=2)
    _, ref_rep = tnconv.truncate(w, "out|in,kh,kw", max_bond=2)
    assert rep.rel_error == pytest.approx(ref_rep.rel_error)
    assert rep.norm_loss == pytest.approx(ref_rep.norm_loss)
    assert tnconv.to_mps(w * scale, max_bond=3).rel_error == pytest.approx(
        tnconv.to_mps(w, max_bond=3).rel_error)
    row = tnconv.spectra_atlas({"a": w * scale})[2]
    assert row["norm_loss_half"] == pytest.approx(tnconv.spectra_atlas({"a": w})[2][
        "norm_loss_half"])
