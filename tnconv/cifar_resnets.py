"""He et al.'s residual networks for 32 x 32 images: ResNet-20, -32, -56 and -110.

"Deep Residual Learning for Image Recognition" (He, Zhang, Ren, Sun 2016), section 4.2: a 3 x 3
stem convolution with 16 channels, three stages of ``n`` basic blocks with 16, 32 and 64
channels (the first block of stages 2 and 3 halves the image with stride 2), global average
pooling and one linear classifier; ``6 n + 2`` weighted layers (``n = 3, 5, 9, 18`` give 20, 32,
56 and 110). A basic block is 3 x 3 conv -> BatchNorm -> ReLU -> 3 x 3 conv -> BatchNorm, plus
the shortcut, then ReLU.

Shortcuts where the shape changes (two per network):

* ``"B"`` (the default): a 1 x 1 stride-2 projection convolution and BatchNorm (torchvision's
  ``downsample``). It adds two more kernels for the study to cut (``layer2.0.downsample.0``,
  ``layer3.0.downsample.0``), a 1 x 1 kernel whose only non-trivial cut is ``out|in``, and
  costs 1 % more parameters (ResNet-20, 3 channels: 269,722 -> 272,474).
* ``"A"``: the paper's CIFAR choice, a parameter-free identity that subsamples by 2 and pads
  the new channels with zeros (ResNet-20: 0.27 M parameters, as in the paper).

The model is built like torchvision's ResNet (``conv1, bn1, relu, layer1 .. layer3, avgpool,
fc``, flattening between ``avgpool`` and ``fc``), so :class:`tnconv.evaluation.prefix.PrefixRunner`
cuts it into the chain ``conv1, bn1, relu, layer1.0, ..., layer3.{n-1}, avgpool, fc`` and a
sweep re-runs only the blocks after the one it truncates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BasicBlock", "CIFAR_RESNET_DEPTHS", "CifarResNet", "check_sizes", "resnet20",
           "resnet32", "resnet56", "resnet110"]


def check_sizes(num_classes: int, in_channels: int) -> None:
    """Raise a TypeError / ValueError unless both sizes are positive ints (every constructor).

    Examples
    --------
    >>> check_sizes(10, 1)
    """
    for label, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{label} must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{label} must be >= 1, got {value}")


#: Blocks per stage of each depth (``depth = 6 n + 2``).
CIFAR_RESNET_DEPTHS: dict[int, int] = {20: 3, 32: 5, 56: 9, 110: 18}
#: Channel widths of the three stages.
_WIDTHS = (16, 32, 64)
_SHORTCUTS = ("A", "B")


class _PadShortcut(nn.Module):
    """Option A: subsample by ``stride`` and append ``extra`` zero channels (no parameters)."""

    def __init__(self, extra: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = extra, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))

    def extra_repr(self) -> str:
        return f"extra={self.extra}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Two 3 x 3 convolutions with BatchNorm and a shortcut (see the module docstring).

    Children: ``conv1, bn1, relu, conv2, bn2`` and, where the shape changes, ``downsample``
    (option B: ``Sequential(1 x 1 conv, BatchNorm)``; option A: a zero-padding identity).

    Examples
    --------
    >>> block = BasicBlock(16, 32, stride=2)
    >>> block(torch.zeros(1, 16, 8, 8)).shape
    torch.Size([1, 32, 4, 4])
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *,
                 shortcut: str = "B") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            if shortcut == "B":
                self.downsample = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                    nn.BatchNorm2d(out_channels))
            else:
                self.downsample = _PadShortcut(out_channels - in_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet of depth ``6 n + 2`` (module docstring); see :func:`resnet20`.

    Children, in forward order: ``conv1, bn1, relu, layer1, layer2, layer3`` (each an
    :class:`torch.nn.Sequential` of :class:`BasicBlock`), ``avgpool`` and ``fc``.
    """

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3, *,
                 shortcut: str = "B") -> None:
        super().__init__()
        check_sizes(num_classes, in_channels)
        if depth not in CIFAR_RESNET_DEPTHS:
            raise ValueError(f"depth must be one of {sorted(CIFAR_RESNET_DEPTHS)}, got "
                             f"{depth!r}")
        if shortcut not in _SHORTCUTS:
            raise ValueError(f"shortcut must be 'A' (zero-padding identity) or 'B' (1 x 1 "
                             f"projection), got {shortcut!r}")
        n = CIFAR_RESNET_DEPTHS[depth]
        self.depth, self.shortcut = depth, shortcut
        self.conv1 = nn.Conv2d(in_channels, _WIDTHS[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(_WIDTHS[0])
        self.relu = nn.ReLU(inplace=True)
        c_in = _WIDTHS[0]
        for i, width in enumerate(_WIDTHS, start=1):
            blocks = [BasicBlock(c_in if b == 0 else width, width,
                                 stride=2 if (b == 0 and i > 1) else 1, shortcut=shortcut)
                      for b in range(n)]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            c_in = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(_WIDTHS[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet20(num_classes: int = 10, in_channels: int = 3, *, shortcut: str = "B"
             ) -> CifarResNet:
    """ResNet-20 for 32 x 32 images: 3 blocks per stage, widths 16-32-64.

    19 3 x 3 convolutions (plus two 1 x 1 projections with ``shortcut="B"``), about 41 MFLOPs
    per image; 0.27 M parameters.

    Parameters
    ----------
    num_classes, in_channels : int, default 10 and 3
        Output classes and image channels (1 for Fashion-MNIST / MNIST).
    shortcut : {"B", "A"}, default "B"
        Where the shape changes: ``"B"`` a 1 x 1 projection (two more kernels for the study),
        ``"A"`` the paper's zero-padding identity (module docstring).

    Returns
    -------
    CifarResNet

    Examples
    --------
    >>> model = resnet20(10, in_channels=1)
    >>> model(torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 10])
    >>> sum(isinstance(m, nn.Conv2d) for m in model.modules())
    21
    """
    return CifarResNet(20, num_classes, in_channels, shortcut=shortcut)


def resnet32(num_classes: int = 10, in_channels: int = 3, *, shortcut: str = "B"
             ) -> CifarResNet:
    """ResNet-32 for 32 x 32 images: 5 blocks per stage (0.46 M parameters); see
    :func:`resnet20`.

    Examples
    --------
    >>> sum(isinstance(m, nn.Conv2d) for m in resnet32().modules())
    33
    """
    return CifarResNet(32, num_classes, in_channels, shortcut=shortcut)


def resnet56(num_classes: int = 10, in_channels: int = 3, *, shortcut: str = "B"
             ) -> CifarResNet:
    """ResNet-56 for 32 x 32 images: 9 blocks per stage (0.85 M parameters); see
    :func:`resnet20`.

    Examples
    --------
    >>> sum(isinstance(m, nn.Conv2d) for m in resnet56().modules())
    57
    """
    return CifarResNet(56, num_classes, in_channels, shortcut=shortcut)


def resnet110(num_classes: int = 10, in_channels: int = 3, *, shortcut: str = "B"
              ) -> CifarResNet:
    """ResNet-110 for 32 x 32 images: 18 blocks per stage (1.7 M parameters); see
    :func:`resnet20`.

    Examples
    --------
    >>> sum(isinstance(m, nn.Conv2d) for m in resnet110().modules())
    111
    """
    return CifarResNet(110, num_classes, in_channels, shortcut=shortcut)
