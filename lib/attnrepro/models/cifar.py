"""CIFAR-sized backbones: the ResNets of He et al. (2016) and the Wide ResNet of Zagoruyko & Komodakis (2016).

Papers:
    He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition". CVPR 2016, section 4.2 (CIFAR-10):
    a 3x3 stem conv with 16 filters, then three stages of ``n`` basic blocks with 16, 32, 64 filters on feature maps
    of 32, 16, 8 pixels (stride-2 convs subsample), global average pooling and a linear classifier; depth 6n + 2.
    Zagoruyko, Komodakis. "Wide Residual Networks". BMVC 2016: pre-activation wide basic blocks
    (BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3), stage widths 16k, 32k, 64k, depth 6n + 4 (WRN-28-10: n = 4, k = 10).

What is the papers' and what is this suite's choice:
    - Shortcuts of the CIFAR ResNets: the paper's **option A** (identity; when the shape changes, the input is
      subsampled with stride 2 and zero channels are appended). Parameter-free, so the parameter counts are the
      paper's (0.27M for ResNet-20, 0.46M / 0.85M / 1.7M for 32 / 56 / 110 with 10 classes).
    - WRN shortcuts: a 1x1 conv (no bias) when the width or the stride changes, applied to the pre-activated input,
      as the authors' code does; identity otherwise. Dropout is 0 by default (the AA paper's setting).
    - ``width`` (this suite's knob): CIFAR ResNets use ``round(c * width)`` channels for every conv including the
      stem (16 / 32 / 64 at 1.0). The WRN's widen factor is ``k = 10 * width`` (``width=1.0`` is WRN-28-10,
      ``width=0.1`` the thin pre-activation ResNet-28 with 16 / 32 / 64 channels); its stem stays at 16 channels
      as in the paper.
    - Initialisation: He-normal (fan_out) convolutions, BN weight 1 and bias 0, like torchvision's ResNets, so the
      plain CIFAR nets and the torchvision nets start from the same rule (:func:`.init.init_backbone`, which
      placement also applies to every attention layer it adds); the classifier's bias starts at 0.
    - Every block has a ``gate`` slot (``nn.Identity`` when plain, no parameters) that :mod:`.placement` fills with
      SE or CBAM: after the last BN of a post-activation block, on the residual branch output of a pre-activation
      block; both before the residual addition.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .init import init_backbone

__all__ = ["CifarBasicBlock", "CifarResNet", "WideBasicBlock", "WideResNet", "CIFAR_DEPTHS", "scaled"]

# depth -> blocks per stage (depth = 6n + 2)
CIFAR_DEPTHS = {20: 3, 32: 5, 56: 9, 110: 18}


def scaled(channels: int, width: float) -> int:
    """``round(channels * width)``, at least 1."""
    return max(1, int(round(channels * width)))


def _init_backbone(model: nn.Module) -> None:
    """The backbone rule (:func:`.init.init_backbone`), and the classifier's bias 0."""
    init_backbone(model)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


def pad_shortcut(x: torch.Tensor, out_channels: int, stride: int) -> torch.Tensor:
    """Option-A shortcut: subsample by ``stride`` and append zero channels up to ``out_channels``."""
    if stride > 1:
        x = x[:, :, ::stride, ::stride]
    extra = out_channels - x.shape[1]
    if extra > 0:
        x = F.pad(x, (0, 0, 0, 0, 0, extra))
    return x


class CifarBasicBlock(nn.Module):
    """Post-activation basic block: conv3x3-BN-ReLU-conv3x3-BN-[gate] + shortcut, ReLU (He et al. 2016).

    Args:
        in_channels: input channels.
        channels: output channels of both convs.
        stride: stride of the first conv (and of the shortcut's subsampling).
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, channels, stride
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.gate = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.gate(self.bn2(self.conv2(out)))
        return F.relu(out + pad_shortcut(x, self.out_channels, self.stride))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images (He et al. 2016, section 4.2) with option-A shortcuts.

    Args:
        depth: 20, 32, 56 or 110.
        num_classes: classifier outputs.
        in_chans: image channels (1 for Fashion-MNIST).
        width: multiplier on every conv's channel count (16 / 32 / 64 at 1.0).
    """

    def __init__(self, depth: int, num_classes: int = 10, in_chans: int = 3, width: float = 1.0):
        super().__init__()
        if depth not in CIFAR_DEPTHS:
            raise ValueError(f"depth={depth!r} is not a CIFAR ResNet depth; choose one of {sorted(CIFAR_DEPTHS)}")
        n = CIFAR_DEPTHS[depth]
        widths = [scaled(c, width) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers, c_in = [], widths[0]
        for i, c in enumerate(widths):
            blocks = []
            for j in range(n):
                blocks.append(CifarBasicBlock(c_in, c, stride=2 if (i > 0 and j == 0) else 1))
                c_in = c
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.fc = nn.Linear(c_in, num_classes)
        _init_backbone(self)

    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class WideBasicBlock(nn.Module):
    """Pre-activation wide basic block: BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3-[gate] + shortcut.

    Args:
        in_channels: input channels.
        channels: output channels of both convs.
        stride: stride of the first conv and of the shortcut.
        drop_rate: dropout between the convs (0: none, the AA paper's setting).
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1, drop_rate: float = 0.0):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, channels, stride
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate
        self.gate = nn.Identity()
        self.shortcut = None
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Conv2d(in_channels, channels, 1, stride, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(pre)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.gate(self.conv2(out))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-depth-k (Zagoruyko & Komodakis 2016) for 32x32 images.

    Args:
        depth: 6n + 4 (28 for WRN-28-10).
        widen: widen factor k (may be fractional; stage widths are ``round(16k)``, ``round(32k)``, ``round(64k)``).
        num_classes: classifier outputs.
        in_chans: image channels.
        drop_rate: dropout inside the blocks.
    """

    def __init__(self, depth: int = 28, widen: float = 10.0, num_classes: int = 10, in_chans: int = 3,
                 drop_rate: float = 0.0):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth={depth!r} is not a WRN depth; it must be 6n + 4 with n >= 1 (e.g. 16, 22, 28)")
        if not widen > 0:
            raise ValueError(f"widen={widen!r} must be > 0")
        n = (depth - 4) // 6
        widths = [scaled(c, widen) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)
        layers, c_in = [], 16
        for i, c in enumerate(widths):
            blocks = []
            for j in range(n):
                blocks.append(WideBasicBlock(c_in, c, stride=2 if (i > 0 and j == 0) else 1, drop_rate=drop_rate))
                c_in = c
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.bn = nn.BatchNorm2d(c_in)
        self.fc = nn.Linear(c_in, num_classes)
        _init_backbone(self)

    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = F.relu(self.bn(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
