"""Activation-gate baselines: Squeeze-and-Excitation and CBAM.

Papers: Hu, Shen, Sun. "Squeeze-and-Excitation Networks". CVPR 2018. Woo, Park, Lee, Kweon. "CBAM: Convolutional
Block Attention Module". ECCV 2018.

The papers': SE squeezes by global average pooling, excites through a two-layer bottleneck (ReLU, sigmoid,
reduction 16) and rescales the channels. CBAM applies a channel gate (average- and max-pooled descriptors through a
shared MLP, summed, sigmoid) and then a spatial gate (a 7x7 conv over the channel-wise mean and max, sigmoid).
This suite's choices: the hidden width is ``max(channels // reduction, 1)``; the MLPs are 1x1 convs with biases;
CBAM's spatial conv has a bias and no batch norm (the paper's equation, not its code listing). Placement (after the
block's last batch norm) is the models' business.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .functional import _check_positive_ints

__all__ = ["SqueezeExcite", "SE", "CBAM"]


def _check(channels, reduction):
    _check_positive_ints(channels=channels, reduction=reduction)
    return max(channels // reduction, 1)


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation gate (Hu et al. 2018): ``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))``.

    Args:
        channels: channels of the gated feature map.
        reduction: bottleneck ratio (hidden width ``max(channels // reduction, 1)``).
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = _check(channels, reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


SE = SqueezeExcite


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al. 2018): channel gate, then spatial gate.

    Args:
        channels: channels of the gated feature map.
        reduction: channel-MLP bottleneck ratio (hidden width ``max(channels // reduction, 1)``).
        spatial_kernel: side of the spatial gate's conv (odd; padding ``spatial_kernel // 2``).
    """

    def __init__(self, channels: int, reduction: int = 16, spatial_kernel: int = 7):
        super().__init__()
        hidden = _check(channels, reduction)
        if int(spatial_kernel) != spatial_kernel or spatial_kernel < 1 or spatial_kernel % 2 == 0:
            raise ValueError(f"spatial_kernel={spatial_kernel!r} is not valid; it must be an odd integer >= 1")
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.mlp(x.mean(dim=(2, 3), keepdim=True)) + self.mlp(x.amax(dim=(2, 3), keepdim=True))
        x = x * torch.sigmoid(c)
        s = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(s))
