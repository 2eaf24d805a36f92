"""tnconv.compression.datafit: factors fitted to a layer's outputs on data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tnconv.compression.candidates import (
    LayerChoices,
    SVDFamily,
    build_layer,
    dense_option,
    layer_families,
)
from tnconv.compression.datafit import ResponseFamily, output_moments, with_data_families

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def _conv_and_data(seed: int = 0, bias: bool = True):
    """A conv whose inputs are strongly correlated across channels (a data fit matters)."""
    gen = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(6, 10, 3, padding=1, bias=bias)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
        if bias:
            conv.bias.copy_(torch.randn(10, generator=gen))
    # 6 channels from 2 sources, smooth in space, plus a little noise
    mix = torch.randn(6, 2, generator=gen)
    smooth = torch.randn(40, 2, 1, 1, generator=gen) + 0.1 * torch.randn(40, 2, 8, 8,
                                                                          generator=gen)
    x = torch.einsum("cs,nshw->nchw", mix, smooth)
    x = x + 0.05 * torch.randn(x.shape, generator=gen)
    return conv, (x, torch.zeros(len(x), dtype=torch.long))


def _response_error(conv: nn.Conv2d, layer: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        y = conv(x).double()
        y0 = y - (0 if conv.bias is None else conv.bias.double().view(1, -1, 1, 1))
        return float((y - layer(x).double()).norm() / y0.norm())


def _family(conv: nn.Conv2d, data) -> ResponseFamily:
    net = nn.Sequential(conv)
    moment = output_moments(net, data, ["0"], device=CPU)["0"]
    bias = 0 if conv.bias is None else conv.bias.numel()
    return ResponseFamily(conv.weight.detach(), bias, None, moment)


@pytest.mark.parametrize("bias", [True, False])
def test_response_error_is_the_measured_one(bias):
    conv, data = _conv_and_data(bias=bias)
    fam = _family(conv, data)
    for r in (1, 2, 3, 5, 10):
        opt = fam.option((r,))
        layer = build_layer(conv, opt)
        assert type(layer).__name__ == "MPSConv2d" and opt.fit == "data"
        assert _response_error(conv, layer, data[0]) == pytest.approx(opt.error, abs=2e-4), r
    assert fam.option((10,)).error < 1e-6


def test_data_fit_beats_the_weight_fit_on_its_data():
    conv, data = _conv_and_data(1)
    fam = _family(conv, data)
    plain = SVDFamily(conv.weight.detach(), 10, None, "out|in,kh,kw")
    errs = []
    for r in range(1, 10):
        ours = _response_error(conv, build_layer(conv, fam.option((r,))), data[0])
        theirs = _response_error(conv, build_layer(conv, plain.option((r,))), data[0])
        assert ours <= theirs + 1e-6, r  # Eckart-Young on the responses: optimal at rank r
        errs.append((ours, theirs))
    # the patches nearly span 2 directions: the data fit is far better at low rank
    assert errs[1][0] < 0.5 * errs[1][1], errs
    # the same parameters and FLOPs as the weight fit of that cut
    assert fam.option((3,)).params == plain.option((3,)).params


def test_output_moments_match_a_manual_sum_and_leave_the_model_alone():
    conv, (x, y) = _conv_and_data(2)
    net = nn.Sequential(conv, nn.ReLU()).train()
    m = output_moments(net, (x, y), ["0"], device=CPU, max_images=7, batch_size=3)["0"]
    with torch.no_grad():
        out = (conv(x[:7]) - conv.bias.view(1, -1, 1, 1)).double()
    flat = out.transpose(0, 1).reshape(10, -1)
    assert torch.allclose(m, flat @ flat.T, rtol=1e-6, atol=1e-6)
    assert net.training and not conv._forward_hooks
    with pytest.raises(ValueError, match="no images"):
        output_moments(net, (x[:0], y[:0]), ["0"], device=CPU)
    with pytest.raises(ValueError, match="10 x 10"):
        ResponseFamily(conv.weight.detach(), 10, None, torch.eye(3))


def test_with_data_families_only_where_the_cut_is_allowed():
    w = torch.randn(8, 4, 3, 3)
    dense = dense_option((8, 4, 3, 3), 0, None)
    layers = [LayerChoices("a", dense, layer_families(w, 0, None, method="auto")),
              LayerChoices("b", dense, layer_families(w, 0, None, method="tucker")),
              LayerChoices("c", dense, layer_families(w, 0, None, method="svd",
                                                      cuts="out,kh|in,kw")),
              LayerChoices("d", dense, [])]
    moments = {n: torch.eye(8) for n in "abcd"}
    out = with_data_families(layers, moments)
    assert [sum(f.fit == "data" for f in lc.families) for lc in out] == [1, 0, 0, 0]
    assert [len(lc.families) for lc in layers] == [6, 1, 1, 0]  # the inputs are not changed
    assert with_data_families(layers[:1], {})[0].families == layers[0].families
