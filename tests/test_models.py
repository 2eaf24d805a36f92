"""tnconv.models: shapes for every dataset, plain structure, names and errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tnconv.models import CNN4, MODELS, cnn4, get_model, resnet50

# (num_classes, in_channels) of cifar10, cifar100, fashion-mnist / mnist; all 32 x 32
SHAPES = [(10, 3), (100, 3), (10, 1)]


@pytest.mark.parametrize("num_classes,in_channels", SHAPES)
def test_cnn4_output_shape_and_chain(num_classes, in_channels):
    torch.manual_seed(0)
    model = cnn4(num_classes, in_channels).eval()
    x = torch.randn(3, in_channels, 32, 32)
    out = model(x)
    assert out.shape == (3, num_classes)
    # the top-level children, applied in order, are the forward pass
    names = [name for name, _ in model.named_children()]
    assert names == ["block1", "block2", "block3", "block4", "classifier"]
    h = x
    for child in model.children():
        h = child(h)
    torch.testing.assert_close(h, out)


def test_cnn4_widths_and_plain_convs():
    model = cnn4(10, 1)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256]
    assert all(type(c) is nn.Conv2d and c.kernel_size == (3, 3) for c in convs)
    assert convs[0].in_channels == 1
    plain = cnn4(10, 3, widths=(8, 8, 16, 16), batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert plain(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("bad", [dict(widths=(8, 8, 8)), dict(widths=(8, 0, 8, 8))])
def test_cnn4_rejects_bad_widths(bad):
    with pytest.raises(ValueError, match="widths"):
        CNN4(10, 3, **bad)


@pytest.mark.parametrize("num_classes,in_channels", SHAPES)
def test_resnet50_cifar_stem_shapes(num_classes, in_channels):
    model = resnet50(num_classes, in_channels).eval()
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert model.conv1.in_channels == in_channels
    assert isinstance(model.maxpool, nn.Identity)
    with torch.no_grad():
        assert model(torch.zeros(2, in_channels, 32, 32)).shape == (2, num_classes)


def test_resnet50_imagenet_stem():
    model = resnet50(10, 1, cifar_stem=False)
    assert model.conv1.kernel_size == (7, 7) and model.conv1.in_channels == 1
    assert isinstance(model.maxpool, nn.MaxPool2d)


def test_resnet50_pretrained_without_weights_says_so(monkeypatch, tmp_path):
    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="ImageNet weights.*pretrained=False"):
        resnet50(10, 3, pretrained=True)


def test_resnet50_pretrained_loads_matching_layers(monkeypatch):
    import torchvision.models._api as api
    from torchvision.models import resnet50 as tv_resnet50

    torch.manual_seed(1)
    reference = tv_resnet50().state_dict()
    monkeypatch.setattr(api, "load_state_dict_from_url", lambda *a, **k: reference)
    model = resnet50(10, 3, pretrained=True)
    state = model.state_dict()
    torch.testing.assert_close(state["layer1.0.conv1.weight"], reference["layer1.0.conv1.weight"])
    assert state["fc.weight"].shape == (10, 2048)  # new classifier, not ImageNet's
    assert state["conv1.weight"].shape == (64, 3, 3, 3)  # CIFAR stem keeps its own init


def test_get_model_by_name():
    assert isinstance(get_model("cnn4", 10, 1), CNN4)
    assert isinstance(get_model("ResNet50", 100, 3).maxpool, nn.Identity)
    model = get_model("resnet18", 10, 1).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 10)


def test_get_model_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown model 'resnet51'.*cnn4.*resnet50"):
        get_model("resnet51", 10, 3)


@pytest.mark.parametrize("num_classes,in_channels,error", [
    (0, 3, ValueError), (10, 0, ValueError), (10.0, 3, TypeError), (10, True, TypeError),
])
def test_bad_sizes_rejected(num_classes, in_channels, error):
    with pytest.raises(error):
        cnn4(num_classes, in_channels)
    with pytest.raises(error):
        resnet50(num_classes, in_channels)


def test_models_registry_lists_the_valid_names():
    assert list(MODELS) == ["cnn4", "resnet50"] and MODELS["CNN4"] is cnn4
    with pytest.raises(ValueError, match=r"unknown model 'vgg'; valid names: cnn4, resnet50"):
        MODELS["vgg"]
    assert "vgg" not in MODELS and MODELS.get("vgg") is None
