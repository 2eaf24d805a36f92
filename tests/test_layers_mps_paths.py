"""Factored forward paths of two-site MPS cuts against dense float64 references.

A two-site cut ``A|B`` has one bond ``r``; the site holding ``in`` is applied first as a
convolution over its spatial legs (``in -> r``), the other site second (``r -> out``). Every
cut form (``out|in,kh,kw``, ``out,kh,kw|in``, ``out,kh|in,kw``, ``out,kw|in,kh``), in either
site order and with permuted legs inside the sites, is compared with ``F.conv2d`` of the
layer's own (truncated) kernel over a grid of stride, padding, dilation and padding modes.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tnconv.layers import MPSConv2d

pytestmark = [pytest.mark.usefixtures("one_thread"),  # tests/conftest.py
              pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")]

# cut -> (spatial legs of the first step, of the second step); the site with "in" goes first
FORMS = {
    "out|in,kh,kw": ("hw", ""),
    "out,kh,kw|in": ("", "hw"),
    "out,kh|in,kw": ("w", "h"),
    "out,kw|in,kh": ("h", "w"),
}
# the same cuts in the other site order and with the legs inside a site permuted
VARIANTS = {
    "kw,in,kh|out": "out|in,kh,kw",
    "in,kh,kw|out": "out|in,kh,kw",
    "out|kh,kw,in": "out|in,kh,kw",
    "in|kw,out,kh": "out,kh,kw|in",
    "kw,kh,out|in": "out,kh,kw|in",
    "in|out,kh,kw": "out,kh,kw|in",
    "in,kw|kh,out": "out,kh|in,kw",
    "kh,out|kw,in": "out,kh|in,kw",
    "kh,in|out,kw": "out,kw|in,kh",
    "kw,out|kh,in": "out,kw|in,kh",
}
ALL_CUTS = {**{c: c for c in FORMS}, **VARIANTS}
KERNELS = [(3, 3), (1, 3), (5, 3), (2, 4)]
SETTINGS = [  # (stride, padding, dilation, padding_mode); "same" only with stride 1
    (s, p, d, m)
    for s, p, d, m in itertools.product(
        [1, 2, (2, 1)], [0, 1, (1, 2), "same"], [1, 2], ["zeros", "reflect", "circular"])
    if p != "same" or s == 1
]
# a covering subset (every value of every option, in varied combinations) for the other cases
SOME_SETTINGS = [
    (1, 0, 1, "zeros"), (2, 1, 2, "reflect"), ((2, 1), (1, 2), 1, "circular"),
    (1, "same", 2, "zeros"), (1, "same", 1, "reflect"), ((2, 1), 1, 2, "zeros"),
    (2, (1, 2), 1, "circular"), (1, (1, 2), 2, "reflect"), (1, "same", 2, "circular"),
]
# the full grid for the four forms with an odd square and an odd non-square kernel
GRID_CASES = [
    (cut, k, SETTINGS if cut in FORMS and k in [(3, 3), (5, 3)] else SOME_SETTINGS)
    for cut in ALL_CUTS for k in KERNELS
]


def _rel(a, b):
    return float((a - b).detach().norm() / b.detach().norm())


def _reference(x, w, b, k, stride, padding, dilation, mode):
    """``F.conv2d`` with the padding computed here, independently of the layer."""
    if padding == "same":
        pads = []
        for size, d in zip(reversed(k), reversed(_pair(dilation)), strict=True):
            total = d * (size - 1)
            pads += [total // 2, total - total // 2]  # torch puts the extra one on the right
    else:
        ph, pw = _pair(padding)
        pads = [pw, pw, ph, ph]
    x = F.pad(x, pads, mode="constant" if mode == "zeros" else mode)
    return F.conv2d(x, w, b, stride, 0, dilation)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _layer(cut, k, *, bias=True, stride=1, padding=0, dilation=1, mode="zeros", cin=3,
           cout=4, max_bond=2, seed=0, **kw):
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, dilation=dilation,
                     bias=bias, padding_mode=mode, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)  # not torch.manual_seed: slow, called often here
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g, dtype=torch.float64))
        if bias:
            conv.bias.copy_(torch.randn(cout, generator=g, dtype=torch.float64))
    return MPSConv2d.from_conv(conv, cut=cut, max_bond=max_bond, **kw)


def _x(cin=3, h=11, w=10, n=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, cin, h, w, generator=g, dtype=torch.float64)


class _CountConv:
    """Records the weight shapes of every ``F.conv2d`` call (patched into torch)."""

    def __init__(self, monkeypatch):
        self.shapes: list[tuple[int, ...]] = []
        original = F.conv2d

        def counted(x, w, *args, **kwargs):
            self.shapes.append(tuple(w.shape))
            return original(x, w, *args, **kwargs)

        monkeypatch.setattr(F, "conv2d", counted)


@pytest.mark.parametrize(
    "cut, k, settings", GRID_CASES,
    ids=[f"{c}-{k[0]}x{k[1]}-{len(s)}" for c, k, s in GRID_CASES])
def test_factored_path_matches_dense_reference(cut, k, settings):
    x = _x()
    for bias, (stride, padding, dilation, mode) in itertools.product((True, False), settings):
        layer = _layer(cut, k, bias=bias, stride=stride, padding=padding, dilation=dilation,
                       mode=mode, path="factored")
        assert layer._factor_steps() is not None
        assert layer.bond_dims == [2]
        got = layer(x)
        want = _reference(x, layer.kernel(), layer.bias, k, stride, padding, dilation, mode)
        setting = (bias, stride, padding, dilation, mode)
        assert got.shape == want.shape, setting
        assert _rel(got, want) < 1e-12, setting
        assert _rel(layer.to_conv()(x), got) < 1e-12, setting


@pytest.mark.parametrize("cut", list(ALL_CUTS))
def test_factored_path_runs_the_two_small_convolutions(cut, monkeypatch):
    first, second = FORMS[ALL_CUTS[cut]]
    layer = _layer(cut, (5, 3), cin=3, cout=4, max_bond=2, path="factored")
    x = _x()
    counter = _CountConv(monkeypatch)
    y = layer(x)
    size = {"h": 5, "w": 3}

    def spatial(axes):
        return tuple(size[a] if a in axes else 1 for a in "hw")

    # in -> r over the first site's spatial legs, then r -> out over the second's
    assert counter.shapes == [(2, 3, *spatial(first)), (4, 2, *spatial(second))]
    counter.shapes.clear()
    layer.path = "dense"
    assert _rel(layer(x), y) < 1e-12
    assert counter.shapes == [(4, 3, 5, 3)]


@pytest.mark.parametrize("cut", list(ALL_CUTS))
def test_gradients_of_factored_path_equal_dense_ones(cut):
    layer = _layer(cut, (3, 3), stride=(2, 1), padding=(1, 2), mode="reflect", max_bond=2)
    x = _x()
    weight = torch.randn(layer(x).shape, generator=torch.Generator().manual_seed(2),
                         dtype=torch.float64)
    grads = {}
    for path in ("dense", "factored"):
        layer.path = path
        layer.zero_grad()
        (layer(x) * weight).sum().backward()
        grads[path] = [p.grad.clone() for p in [*layer.cores, layer.bias]]
    for g_fact, g_dense in zip(grads["factored"], grads["dense"], strict=True):
        assert float(g_fact.norm()) > 0
        assert _rel(g_fact, g_dense) < 1e-10


def test_flops_of_factored_path_by_hand():
    # "out,kh|in,kw", 3 -> 4 channels, 5x3 kernel, stride (2, 1), padding (1, 2), r = 2
    layer = _layer("out,kh|in,kw", (5, 3), stride=(2, 1), padding=(1, 2), max_bond=2)
    n, h, w = 2, 11, 10
    w1 = (w + 2 * 2 - 3) // 1 + 1  # 1 x 3 conv over w: 12 columns, all 11 rows
    h2 = (h + 2 * 1 - 5) // 2 + 1  # then 5 x 1 over h, stride 2: 5 rows
    step1 = n * h * w1 * 2 * 3 * 3  # [r=2, in=3, 1, 3]
    step2 = n * h2 * w1 * 4 * 2 * 5  # [out=4, r=2, 5, 1]
    est = layer.flops((n, 3, h, w))
    assert est["factored"] == step1 + step2 == 4752 + 4800
    assert est["dense"] - layer._kernel_flops() == n * h2 * w1 * 4 * 3 * 5 * 3
    assert layer(_x(h=h, w=w)).shape == (n, 4, h2, w1)

    # reflect padding is applied up front: the leading 1x1 runs on the padded 10 x 10 input
    layer = _layer("in|out,kh,kw", (3, 3), stride=2, padding=1, mode="reflect", max_bond=2)
    step1 = 1 * 10 * 10 * 2 * 3  # 1x1 [r=2, in=3]
    step2 = 1 * 4 * 4 * 4 * 2 * 3 * 3  # 3x3 stride 2 on 10 x 10 -> 4 x 4, [out=4, r=2]
    assert layer.flops((1, 3, 8, 8))["factored"] == step1 + step2


@pytest.mark.parametrize("form", list(FORMS))
def test_auto_picks_factored_when_truncated_and_dense_at_full_rank(form, monkeypatch):
    shape = (2, 16, 12, 12)
    x = _x(cin=16, h=12, w=12)
    small = _layer(form, (3, 3), padding=1, cin=16, cout=16, max_bond=2)
    full = _layer(form, (3, 3), padding=1, cin=16, cout=16, max_bond=None)
    assert small.path == full.path == "auto"
    assert small.bond_dims == [2]
    assert full.bond_dims[0] >= 16  # one bond, untruncated: r = min of the two sides
    est_small, est_full = small.flops(shape), full.flops(shape)
    assert est_small["factored"] < est_small["dense"]
    assert est_full["factored"] > est_full["dense"]
    counter = _CountConv(monkeypatch)
    y_small, y_full = small(x), full(x)
    assert len(counter.shapes) == 3  # two steps for the truncated layer, one dense conv
    assert small._path_cache[shape] is True and full._path_cache[shape] is False
    for layer, y in ((small, y_small), (full, y_full)):
        want = F.conv2d(x, layer.kernel(), layer.bias, padding=1)
        assert _rel(y, want) < 1e-12


@pytest.mark.parametrize(
    "cut, kw",
    [
        ("out,kh|in,kw", {"groups": 3}),  # grouped: dense only
        ("out,kh|in,kw", {"split": {"out": (2, 3)}}),  # sub-legs: dense only
        ("out,in|kh,kw", {}),  # in and out on one site: no cheap conv form
        ("out,in,kh|kw", {}),
        ("kh|out,in,kw", {}),
    ],
)
def test_cuts_without_factored_path_decline_and_stay_exact(cut, kw):
    torch.manual_seed(0)
    groups = kw.pop("groups", 1)
    conv = nn.Conv2d(6, 6, 3, padding=1, groups=groups, dtype=torch.float64)
    layer = MPSConv2d.from_conv(conv, cut=cut, max_bond=2, **kw)
    assert layer._factor_steps() is None
    assert layer.flops((2, 6, 9, 8))["factored"] is None
    with pytest.raises(ValueError, match="path='factored' does not apply"):
        layer.path = "factored"
    x = _x(cin=6, h=9, w=8)
    assert _rel(layer(x), F.conv2d(x, layer.kernel(), layer.bias, padding=1, groups=groups)) \
        < 1e-12
