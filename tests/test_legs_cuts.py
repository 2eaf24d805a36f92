"""Leg names, sub-leg factoring and cut parsing."""

import pytest
import torch

import tnconv
from tnconv.cuts import default_chain, parse_cut
from tnconv.legs import factorize, physical_legs, resolve_split

CONV = ("out", "in", "kh", "kw")


@pytest.mark.parametrize(
    ("ndim", "legs"),
    [(2, ("out", "in")), (3, ("out", "in", "k")), (4, CONV), (5, ("out", "in", "kd", "kh", "kw"))],
)
def test_kernel_legs(ndim, legs):
    assert tnconv.kernel_legs(ndim) == legs
    assert tnconv.kernel_legs(torch.zeros((2,) * ndim)) == legs


@pytest.mark.parametrize(("n", "count"), [(2, 1), (3, 3), (4, 7), (5, 15)])
def test_all_cuts_counts_and_distinct(n, count):
    legs = tnconv.kernel_legs(n)
    cuts = tnconv.all_cuts(legs)
    assert len(cuts) == count == 2 ** (n - 1) - 1
    seen = set()
    for c in cuts:
        left, right = parse_cut(c, legs)
        key = frozenset([frozenset(left), frozenset(right)])
        assert key not in seen
        seen.add(key)
        assert sorted(left + right) == sorted(legs)


def test_all_cuts_order_conv2d():
    assert tnconv.all_cuts(CONV) == [
        "out|in,kh,kw", "out,in|kh,kw", "out,kh|in,kw", "out,kw|in,kh",
        "out,in,kh|kw", "out,in,kw|kh", "out,kh,kw|in",
    ]


def test_parse_chain_and_multi_leg_sites():
    assert parse_cut("out|kh|kw|in", CONV) == (("out",), ("kh",), ("kw",), ("in",))
    assert parse_cut("out,kh|kw|in", CONV) == (("out", "kh"), ("kw",), ("in",))
    assert parse_cut([("out", "kh"), ("in", "kw")], CONV) == (("out", "kh"), ("in", "kw"))
    assert parse_cut(" out , kh | in,kw ", CONV) == (("out", "kh"), ("in", "kw"))


def test_parse_cut_with_split_parent_and_sub_legs():
    sp = {"out": (4, 4, 4)}
    assert parse_cut("out|in,kh,kw", CONV, sp) == (("out0", "out1", "out2"), ("in", "kh", "kw"))
    assert parse_cut("out0|out1,out2,in,kh,kw", CONV, sp)[0] == ("out0",)
    assert default_chain(CONV, sp) == "out0|out1|out2|kh|kw|in"
    assert default_chain(CONV) == "out|kh|kw|in"


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        ("out,kx|in,kw,kh", "unknown leg 'kx'"),
        ("out,out|in,kh,kw", "more than once"),
        ("out|in,kh", "leaves out leg(s) kw"),
        ("|out,in,kh,kw", "empty side"),
        ("out,in,kh,kw|", "empty side"),
        ("out,,kh|in,kw", "empty"),
        ("out,in,kh,kw", "at least 2 separated"),
        ("", "empty cut"),
    ],
)
def test_parse_cut_errors_name_the_problem(cut, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_cut(cut, CONV)


def test_parse_cut_error_lists_valid_legs():
    with pytest.raises(ValueError, match="valid legs: out, in, kh, kw"):
        parse_cut("out|in,kh,x", CONV)


def test_parse_cut_type_errors():
    with pytest.raises(TypeError):
        parse_cut(3, CONV)
    with pytest.raises(TypeError):
        parse_cut([("out",), 5], CONV)


def test_bipartition_only_where_asked():
    with pytest.raises(ValueError, match="bipartition"):
        parse_cut("out|kh|kw|in", CONV, max_groups=2)


@pytest.mark.parametrize(
    ("n", "mode", "factors"),
    [(64, "binary", (2,) * 6), (48, "binary", (2, 2, 2, 2, 3)), (12, "prime", (2, 2, 3)),
     (7, "prime", (7,)), (1, "binary", (1,)), (9, "binary", (9,))],
)
def test_factorize(n, mode, factors):
    assert factorize(n, mode) == factors


def test_resolve_split_modes_and_errors():
    shape = (64, 12, 3, 3)
    assert resolve_split(shape, CONV, None) == {}
    assert resolve_split(shape, CONV, {"out": (4, 4, 4)}) == {"out": (4, 4, 4)}
    assert resolve_split(shape, CONV, "binary") == {"out": (2,) * 6, "in": (2, 2, 3)}
    assert resolve_split(shape, CONV, "prime") == {"out": (2,) * 6, "in": (2, 2, 3)}
    # a single factor leaves the leg whole
    assert resolve_split(shape, CONV, {"out": (64,)}) == {}
    with pytest.raises(ValueError, match="product 48"):
        resolve_split(shape, CONV, {"out": (4, 4, 3)})
    with pytest.raises(ValueError, match="unknown leg 'x'"):
        resolve_split(shape, CONV, {"x": (2,)})
    with pytest.raises(ValueError, match="unknown split 'ternary'"):
        resolve_split(shape, CONV, "ternary")
    with pytest.raises(ValueError, match="positive"):
        resolve_split(shape, CONV, {"out": (-8, -8)})
    with pytest.raises(TypeError):
        resolve_split(shape, CONV, 3)
    assert physical_legs(CONV, {"out": (4, 4, 4)})[:3] == ("out0", "out1", "out2")
