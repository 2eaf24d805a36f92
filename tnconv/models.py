"""The study's models: a plain four-layer CNN, the CIFAR ResNets, ResNet-50, any torchvision model.

Every model is built from standard modules only (plain :class:`torch.nn.Conv2d` layers whose
kernels tnconv can cut and truncate) and takes ``num_classes`` and ``in_channels`` so one
constructor serves CIFAR (3 channels) and Fashion-MNIST / MNIST (1 channel). All datasets of
:mod:`tnconv.data` are 32 x 32.

``cnn4`` is an :class:`torch.nn.Sequential`: applying ``model.children()`` in order is the forward
pass, so activations can be cached at the input of each top-level child. He et al.'s CIFAR
ResNets (``resnet20``, ``resnet32``, ``resnet56``, ``resnet110``) live in
:mod:`tnconv.cifar_resnets` and are registered here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .cifar_resnets import CifarResNet, check_sizes, resnet20, resnet32, resnet56, resnet110
from .model_layers import replace_layer
from .registry import Registry

__all__ = ["CNN4", "CNN4_WIDTHS", "MODELS", "CifarResNet", "check_sizes", "cnn4", "get_model",
           "resnet20", "resnet32", "resnet50", "resnet56", "resnet110"]

#: Default channel widths of the four convolutions of :func:`cnn4`.
CNN4_WIDTHS: tuple[int, int, int, int] = (32, 64, 128, 256)



class CNN4(nn.Sequential):
    """Four 3 x 3 conv blocks (conv -> BatchNorm -> ReLU -> 2 x 2 max-pool), then a linear layer.

    Top-level children, in forward order: ``block1`` .. ``block4`` (each an
    :class:`torch.nn.Sequential` of ``conv``, ``bn``, ``relu``, ``pool``) and ``classifier``
    (global average ``pool``, ``flatten``, then ``fc``). With 32 x 32 inputs the spatial size goes
    32 -> 16 -> 8 -> 4 -> 2 before the average pool, so ``fc`` sees ``widths[3]`` features.
    See :func:`cnn4`.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        widths: Sequence[int] = CNN4_WIDTHS,
        batch_norm: bool = True,
    ):
        super().__init__()
        check_sizes(num_classes, in_channels)
        widths = tuple(widths)
        if len(widths) != 4 or any(not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"widths must be four positive ints, got {widths!r}")
        c_in = in_channels
        for i, c_out in enumerate(widths, start=1):
            block = nn.Sequential()
            block.add_module("conv", nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                block.add_module("bn", nn.BatchNorm2d(c_out))
            block.add_module("relu", nn.ReLU(inplace=True))
            block.add_module("pool", nn.MaxPool2d(2))
            self.add_module(f"block{i}", block)
            c_in = c_out
        classifier = nn.Sequential()
        classifier.add_module("pool", nn.AdaptiveAvgPool2d(1))
        classifier.add_module("flatten", nn.Flatten())
        classifier.add_module("fc", nn.Linear(widths[-1], num_classes))
        self.add_module("classifier", classifier)


def cnn4(
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    widths: Sequence[int] = CNN4_WIDTHS,
    batch_norm: bool = True,
) -> CNN4:
    """The vanilla four-layer CNN of the study.

    Four blocks of 3 x 3 convolution (padding 1) -> BatchNorm -> ReLU -> 2 x 2 max-pool with
    widths 32, 64, 128, 256, then global average pooling and one linear classifier
    (256 -> ``num_classes``). About 0.39 M parameters; one Fashion-MNIST epoch takes about a
    minute on a 2-core CPU.

    The average pool before the classifier keeps SGD stable at learning rate 0.1: flattening the
    2 x 2 x 256 map instead gives the linear layer 1024 positive (post-ReLU) inputs and makes the
    first steps diverge at that rate.

    BatchNorm is the one departure from "vanilla": it makes the short CPU schedule (a few
    epochs of one-cycle SGD) reliable. Pass ``batch_norm=False`` for conv + ReLU + max-pool
    only (the convolutions then get a bias).

    Parameters
    ----------
    num_classes : int, default 10
        Output classes.
    in_channels : int, default 3
        Image channels (3 for CIFAR, 1 for Fashion-MNIST / MNIST).
    widths : sequence of four ints, default (32, 64, 128, 256)
        Output channels of the four convolutions.
    batch_norm : bool, default True
        BatchNorm after each convolution.

    Returns
    -------
    CNN4
        An :class:`torch.nn.Sequential` of ``block1`` .. ``block4`` and ``classifier``.

    Examples
    --------
    >>> model = cnn4(10, in_channels=1)
    >>> model(torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 10])
    >>> [name for name, _ in model.named_children()]
    ['block1', 'block2', 'block3', 'block4', 'classifier']
    """
    return CNN4(
        num_classes, in_channels, widths=widths, batch_norm=batch_norm
    )


def _pretrained_resnet50_state() -> dict[str, torch.Tensor]:
    from torchvision.models import ResNet50_Weights

    weights = ResNet50_Weights.IMAGENET1K_V2
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # no cache and no network surface as many exception types
        hub = torch.hub.get_dir()
        raise FileNotFoundError(
            f"ImageNet weights for resnet50 ({weights.url.rsplit('/', 1)[-1]}) are neither in "
            f"the torch hub cache ({hub}/checkpoints) nor downloadable here ({exc}); copy the "
            "file there or use pretrained=False"
        ) from exc


def resnet50(
    num_classes: int = 10,
    in_channels: int = 3,
    cifar_stem: bool = True,
    *,
    pretrained: bool = False,
) -> nn.Module:
    """torchvision's ResNet-50, adapted to small images and any number of channels.

    With ``cifar_stem=True`` (for 32 x 32 inputs) the first convolution is 3 x 3 with stride 1
    and padding 1, and the max-pool is replaced by :class:`torch.nn.Identity`. The structure is
    torchvision's: ``conv1, bn1, relu, maxpool, layer1 .. layer4, avgpool, fc``; note that its
    ``forward`` flattens between ``avgpool`` and ``fc``.

    Parameters
    ----------
    num_classes : int, default 10
        Output classes.
    in_channels : int, default 3
        Image channels.
    cifar_stem : bool, default True
        3 x 3 stride-1 stem without max-pool (else ImageNet's 7 x 7 stride-2 stem and max-pool).
    pretrained : bool, default False
        Start from torchvision's ImageNet weights (``IMAGENET1K_V2``), taken from the torch hub
        cache or downloaded. Layers whose shape differs (the CIFAR stem, another channel count,
        the classifier for ``num_classes != 1000``) keep their fresh initialisation. Raises
        :class:`FileNotFoundError` saying where it looked when the weights are unavailable.

    Returns
    -------
    torchvision.models.ResNet

    Examples
    --------
    >>> model = resnet50(100, in_channels=3)
    >>> model(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 100])
    """
    from torchvision.models import resnet50 as tv_resnet50

    check_sizes(num_classes, in_channels)
    model = tv_resnet50(weights=None, num_classes=num_classes)
    if cifar_stem:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if pretrained:
        state = _pretrained_resnet50_state()
        own = model.state_dict()
        keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        own.update(keep)
        model.load_state_dict(own)
    return model


#: Models built by tnconv itself (name -> constructor); any other name is looked up in
#: torchvision by :func:`get_model`. The CLI takes its ``--model`` choices from here.
MODELS: Registry[Any] = Registry("model", {
    "cnn4": cnn4, "resnet20": resnet20, "resnet32": resnet32, "resnet56": resnet56,
    "resnet110": resnet110, "resnet50": resnet50,
})


def _torchvision_names() -> list[str]:
    import torchvision.models

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Replace the first 3-channel Conv2d of ``model`` by one with ``in_channels`` inputs."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            new = nn.Conv2d(
                in_channels, module.out_channels, module.kernel_size, module.stride,
                module.padding, module.dilation, module.groups, module.bias is not None,
                module.padding_mode,
            )
            replace_layer(model, name, new)
            return
    raise ValueError(f"cannot adapt {type(model).__name__} to in_channels={in_channels}: "
                     "no 3-channel Conv2d found")


def _resolve_weights(key: str, weights: Any) -> Any:
    """torchvision's weights enum member for ``weights`` (a member, or a name such as
    ``"DEFAULT"``, ``"IMAGENET1K_V1"`` or ``"ResNet18_Weights.IMAGENET1K_V1"``)."""
    import torchvision.models

    if not isinstance(weights, str):
        return weights
    enum = torchvision.models.get_model_weights(key)
    member = weights.rsplit(".", 1)[-1]
    if member == "DEFAULT" or member in enum.__members__:
        return enum[member]
    names = [m for m in enum.__members__ if m != "DEFAULT"]
    raise ValueError(f"unknown weights {weights!r} for {key}; valid: DEFAULT, "
                     f"{', '.join(names)}")


def _pretrained(key: str, weights: Any, **kwargs: Any) -> nn.Module:
    """torchvision's ``key`` with ``weights``: from the torch hub cache, else downloaded."""
    import torchvision.models

    w = _resolve_weights(key, weights)
    try:
        return torchvision.models.get_model(key, weights=w, **kwargs)
    except (ValueError, TypeError):  # torchvision's own checks (num_classes, ...)
        raise
    except Exception as exc:  # offline: URLError, OSError, ... as the network fails
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        file = w.url.rsplit("/", 1)[-1]
        raise FileNotFoundError(
            f"weights {w} for {key} are not in the torch hub cache and cannot be downloaded "
            f"here ({type(exc).__name__}: {exc}); put {file} (from {w.url}) into {hub}/"
        ) from exc


def get_model(name: str, num_classes: int | None = None, in_channels: int = 3, *,
              weights: Any = None, **kwargs: Any) -> nn.Module:
    """Build a model by name: ``"cnn4"``, a CIFAR ResNet, ``"resnet50"`` or any torchvision model.

    Parameters
    ----------
    name : str
        ``"cnn4"`` (:func:`cnn4`), ``"resnet20"`` / ``"resnet32"`` / ``"resnet56"`` /
        ``"resnet110"`` (:mod:`tnconv.cifar_resnets`), ``"resnet50"`` (:func:`resnet50`, CIFAR
        stem by default), or a
        name from ``torchvision.models.list_models(module=torchvision.models)`` (built with
        random weights; its first convolution is replaced when ``in_channels != 3``).
    num_classes : int, optional
        Output classes; default 10, or the weights' classes (1000 for ImageNet) with
        ``weights``.
    in_channels : int, default 3
        Image channels.
    weights : str or torchvision weights enum, optional
        torchvision's weights API, passed through: ``"DEFAULT"``, ``"IMAGENET1K_V1"``,
        ``"ResNet18_Weights.IMAGENET1K_V1"`` or an enum member. The name is then always
        torchvision's model (``"resnet50"`` with weights is torchvision's ImageNet ResNet-50,
        not the CIFAR-stem variant). The file is taken from the torch hub cache
        (``torch.hub.get_dir()/checkpoints``) or downloaded; offline without it a
        :class:`FileNotFoundError` says which file to put where.
    **kwargs
        Passed to the constructor.

    Returns
    -------
    torch.nn.Module

    Raises
    ------
    ValueError
        Unknown name or weights (the message lists the valid ones).
    FileNotFoundError
        ``weights`` neither in the torch hub cache nor downloadable.

    Examples
    --------
    >>> get_model("cnn4", 10, 1)(torch.zeros(1, 1, 32, 32)).shape
    torch.Size([1, 10])
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    key = name.strip().lower()
    if key in MODELS and weights is None:
        return MODELS[key](10 if num_classes is None else num_classes, in_channels, **kwargs)
    names = _torchvision_names()
    if key not in names:
        raise ValueError(
            f"unknown model {name!r}; valid names: {', '.join(MODELS)}, or a torchvision "
            f"classification model ({', '.join(names)})"
        )
    import torchvision.models

    if weights is not None:
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        check_sizes(num_classes or 1, in_channels)
        model = _pretrained(key, weights, **kwargs)
    else:
        num_classes = 10 if num_classes is None else num_classes
        check_sizes(num_classes, in_channels)
        model = torchvision.models.get_model(key, weights=None, num_classes=num_classes,
                                             **kwargs)
    if in_channels != 3:
        _adapt_first_conv(model, in_channels)
    return model
