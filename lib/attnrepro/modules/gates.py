"""Activation-gate baselines: Squeeze-and-Excitation and CBAM.

Papers: Hu, Shen, Sun. "Squeeze-and-Excitation Networks". CVPR 2018. Woo, Park, Lee, Kweon. "CBAM: Convolutional
Block Attention Module". ECCV 2018.

The papers': SE squeezes by global average pooling, excites through a two-layer bottleneck (ReLU, sigmoid,
reduction 16) and rescales the channels. CBAM applies a channel gate (average- and max-pooled descriptors through a
shared MLP, summed, sigmoid) and then a spatial gate (a 7x7 conv over the channel-wise mean and max, sigmoid).
This suite's choices: the hidden width is ``max(channels // reduction, 1)``; the MLPs are 1x1 convs with biases;
CBAM's spatial conv has a bias and no batch norm (the paper's equation, not its code listing). Placement (after the
block's last batch norm) is the models' business.

Initialisation: a model's placement gives every conv here the backbone's rule (He-normal fan_out weights, zero
biases; :func:`attnrepro.models.init.init_backbone`); the CBAM authors' code gives its convs the same rule and
zeroes every bias.
One deliberate exception: CBAM's spatial conv (its last layer) starts at zero, weight and bias, so the spatial gate
starts at ``sigmoid(0) = 1/2`` everywhere. The CBAM authors' code does the same through the batch norm that follows
its spatial conv (that norm's weight starts at 0); without the norm (see above), zeroing the conv is the
equivalent. A He-normal 7x7 conv over the channel mean and max would instead give the gate logits of std about 1.3
(unit-variance features), about a sixth of the positions gated below 0.1 or above 0.9 before any training. CBAM
declares the exception in ``init_exempt``, which the placement's rule respects.
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

    The spatial conv starts at zero (the gate at 1/2 everywhere), as in the authors' code; see the module docstring.

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
        nn.init.zeros_(self.spatial.weight)
        nn.init.zeros_(self.spatial.bias)

    #: submodules that keep the initialisation above under the backbone's rule (attnrepro.models.init)
    init_exempt = ("spatial",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.mlp(x.mean(dim=(2, 3), keepdim=True)) + self.mlp(x.amax(dim=(2, 3), keepdim=True))
        x = x * torch.sigmoid(c)
        s = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(s))
