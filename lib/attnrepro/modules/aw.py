"""AW-convolution: per-sample attention maps with the shape of the convolution kernel.

Paper: Zhu, Hofstee, Lee, Al-Ars. "An Attention Module for Convolutional Neural Networks". ICANN 2021,
LNCS 12891, pp. 167-178, arXiv 2108.08205.

The paper's: each sample gets an attention map ``A`` shaped like the kernel, computed from the input by average
pooling then two point-wise convolutions with a ReLU between; a residual keeps the original kernel, so the effective
kernel is ``K * (1 + A)`` and ``conv(X (x) A, K) = conv(X, A (.) K)``.

This suite's reconstruction (``papers.md`` section 3; the paper leaves the pooled size, widths, gate and sharing
open): ``P = adaptive_avg_pool(X, k)`` of shape ``(B, C_in, k, k)``; ``A = sigmoid(pw2(relu(pw1(P))))`` where pw1
(``C_in -> max(C_in // r, 8)``) and pw2 (``-> m * C_in``) are 1x1 convs applied at each of the ``k x k`` pooled
positions; ``A`` is reshaped to ``(B, m, C_in, k, k)`` and output channel ``o`` uses map ``o * m // C_out``
(``m = 1``: one shared map; ``m = C_out``: one per filter). ``m`` larger than ``C_out`` is clamped to ``C_out``
(more maps than filters would never be used). The per-sample kernels run as one grouped convolution
(:func:`~attnrepro.modules.functional.aw_conv2d`).

Initialisation: the kernel starts with ``nn.Conv2d``'s default here; a model's placement
(:func:`attnrepro.models.init.init_backbone`) gives the kernel and both point-wise convs the backbone's rule
(He-normal fan_out weights, zero biases), so the kernel starts like the conv it replaces. No exception: with zero
biases the maps start near ``sigmoid(0) = 1/2`` (std 0.05 to 0.1 in a freshly built ResNet-20 or -50 in train
mode), an effective kernel of about ``1.5 K``.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .explicit import _check_conv_args
from .functional import _check_positive_ints, adaptive_avg_pool2d, aw_conv2d

__all__ = ["AWConv2d"]


class AWConv2d(nn.Module):
    """Attention-weighted convolution (Zhu et al. 2021), a drop-in for a bias-free ``kxk`` conv.

    Args:
        in_channels: input channels ``C_in``.
        out_channels: output channels ``C_out``.
        kernel_size: ``k`` (padding ``k // 2``); also the pooled size of the attention branch.
        stride: conv stride.
        reduction: ``r``; hidden width of the attention branch is ``max(C_in // r, 8)``.
        maps: ``m``, attention maps shared by the output channels (clamped to ``C_out``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, *,
                 reduction: int = 16, maps: int = 8):
        super().__init__()
        _check_conv_args(in_channels, out_channels, kernel_size, stride)
        _check_positive_ints(reduction=reduction, maps=maps)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, kernel_size // 2
        self.maps = min(maps, out_channels)
        hidden = max(in_channels // reduction, 8)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv2d's default
        self.pw1 = nn.Conv2d(in_channels, hidden, 1)
        self.pw2 = nn.Conv2d(hidden, self.maps * in_channels, 1)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The per-sample maps ``A``, ``(B, m, C_in, k, k)``, values in (0, 1)."""
        k = self.kernel_size
        p = adaptive_avg_pool2d(x, k)   # deterministic on CUDA when asked (see the function)
        a = torch.sigmoid(self.pw2(F.relu(self.pw1(p))))
        return a.reshape(x.shape[0], self.maps, self.in_channels, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return aw_conv2d(x, self.weight, self.attention(x), None, self.stride, self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"maps={self.maps}")
