"""tnconv.models: shapes for every dataset, plain structure, names and errors; the CIFAR ResNets
(parameter counts against He et al., shortcuts, stage cutting for prefix evaluation)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tnconv.cifar_resnets import BasicBlock, CifarResNet
from tnconv.models import CNN4, MODELS, cnn4, get_model, resnet20, resnet50

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
    assert list(MODELS) == ["cnn4", "resnet20", "resnet32", "resnet56", "resnet110",
                            "resnet50"] and MODELS["CNN4"] is cnn4
    with pytest.raises(ValueError, match=r"unknown model 'vgg'; valid names: cnn4, resnet20, "
                       r"resnet32, resnet56, resnet110, resnet50"):
        MODELS["vgg"]
    assert "vgg" not in MODELS and MODELS.get("vgg") is None


# He et al. 2016, table 6: 0.27 M, 0.46 M, 0.85 M, 1.7 M parameters (option A, CIFAR-10); exact
# counts for 3 channels and 10 classes. Option B adds two 1 x 1 projections and their BatchNorm:
# 16 * 32 + 32 * 64 weights and 2 * (32 + 64) affine parameters = 2752.
RESNET_PARAMS = {20: 269_722, 32: 464_154, 56: 853_018, 110: 1_727_962}


@pytest.mark.parametrize("depth", sorted(RESNET_PARAMS))
@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_cifar_resnet_parameters_and_convs(depth, shortcut):
    model = get_model(f"resnet{depth}", 10, 3, shortcut=shortcut)
    n_params = sum(p.numel() for p in model.parameters())
    extra = 2752 if shortcut == "B" else 0
    assert n_params == RESNET_PARAMS[depth] + extra
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert all(type(m) is nn.Conv2d for _, m in convs)
    three = [m for _, m in convs if m.kernel_size == (3, 3)]
    one = [n for n, m in convs if m.kernel_size == (1, 1)]
    assert len(three) == depth - 1  # 6 n + 1 convolutions, plus fc: depth weighted layers
    assert one == (["layer2.0.downsample.0", "layer3.0.downsample.0"] if shortcut == "B"
                   else [])
    n = (depth - 2) // 6
    assert [len(getattr(model, f"layer{i}")) for i in (1, 2, 3)] == [n, n, n]
    assert [getattr(model, f"layer{i}")[0].conv1.out_channels for i in (1, 2, 3)] == [16, 32, 64]


def test_resnet20_is_027m_parameters():
    assert round(sum(p.numel() for p in resnet20(10, 3, shortcut="A").parameters()) / 1e6,
                 2) == 0.27
    assert 0.27e6 < sum(p.numel() for p in resnet20(10, 3).parameters()) < 0.28e6


@pytest.mark.parametrize("num_classes,in_channels", SHAPES)
@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_resnet20_forward_shapes(num_classes, in_channels, shortcut):
    torch.manual_seed(0)
    model = resnet20(num_classes, in_channels, shortcut=shortcut).eval()
    assert model.conv1.in_channels == in_channels and model.fc.out_features == num_classes
    with torch.no_grad():
        out = model(torch.randn(3, in_channels, 32, 32))
    assert out.shape == (3, num_classes) and out.isfinite().all()
    # the stages halve the image twice: 32 -> 16 -> 8 with 16, 32, 64 channels
    feats = []
    hooks = [getattr(model, f"layer{i}").register_forward_hook(
        lambda m, i, o: feats.append(tuple(o.shape[1:]))) for i in (1, 2, 3)]
    with torch.no_grad():
        model(torch.randn(1, in_channels, 32, 32))
    for h in hooks:
        h.remove()
    assert feats == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]


def test_option_a_shortcut_pads_zeros_and_subsamples():
    block = BasicBlock(2, 4, stride=2, shortcut="A")
    x = torch.randn(1, 2, 4, 4)
    y = block.downsample(x)
    assert y.shape == (1, 4, 2, 2)
    torch.testing.assert_close(y[:, :2], x[:, :, ::2, ::2])
    assert not y[:, 2:].any()
    assert not list(block.downsample.parameters())
    assert BasicBlock(4, 4).downsample is None


def test_resnet20_trains_one_step():
    torch.manual_seed(0)
    model = resnet20(10, 1)
    x, y = torch.randn(8, 1, 32, 32), torch.randint(0, 10, (8,))
    before = model.layer3[2].conv2.weight.detach().clone()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert not torch.equal(before, model.layer3[2].conv2.weight)


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_resnet20_cuts_into_stages_for_prefix_evaluation(shortcut):
    from tnconv.evaluation.prefix import PrefixRunner, model_stages

    torch.manual_seed(0)
    model = resnet20(10, 1, shortcut=shortcut).eval()
    blocks = [f"layer{i}.{b}" for i in (1, 2, 3) for b in range(3)]
    names = ["conv1", "bn1", "relu", *blocks, "avgpool", "fc"]
    assert [n for n, _ in model_stages(model)] == names
    data = (torch.randn(12, 1, 32, 32), torch.randint(0, 10, (12,)))
    run = PrefixRunner(model, data, batch_size=6, device="cpu")
    assert run.mode == "prefix" and [n for n, _ in run.stages] == names
    full = run.evaluate()
    for start in (3, names.index("layer2.0"), names.index("layer3.2")):
        assert run.evaluate_from(start) == full


@pytest.mark.parametrize("kwargs,match", [
    (dict(depth=18), "depth must be one of"), (dict(shortcut="C"), "shortcut must be"),
    (dict(num_classes=0), "num_classes"),
])
def test_cifar_resnet_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CifarResNet(**kwargs)


def test_cifar_resnets_docstring_examples():
    import doctest

    import tnconv.cifar_resnets

    result = doctest.testmod(tnconv.cifar_resnets, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 6 and result.failed == 0


def test_quick_resnet_study_runs_resnet20_on_every_conv_layer():
    """Without a GPU the ResNet study is ResNet-20 (all conv layers, all cuts, retraining)."""
    from tnconv.study.profiles import PROFILE_SETS
    from tnconv.train import train_config

    quick = PROFILE_SETS["resnet50"].profiles["quick"]
    assert quick.model == "resnet20" and quick.layers is None and quick.cuts == "all"
    assert quick.train == "cache" and quick.retrain_epochs >= 1 and len(quick.levels) >= 4
    assert PROFILE_SETS["resnet50"].profiles["full"].model == "resnet50"
    assert PROFILE_SETS["cnn4"].profiles["quick"].model == "cnn4"
    # trained by the benchmarked CPU defaults (benchmarks/results/resnet20-*.json)
    assert train_config("resnet20", "fashion-mnist", "cpu")["epochs"] == 3
