"""AA: attention augmented convolution.

Paper: Bello, Zoph, Vaswani, Shlens, Le. "Attention Augmented Convolutional Networks". ICCV 2019, arXiv 1904.09925.

The paper's: ``AAConv(X) = concat(Conv(X) -> F_out - d_v, MHA(X) -> d_v)``, followed by the block's batch norm;
Q, K, V from one 1x1 conv to ``2 d_k + d_v`` channels; ``kappa = d_k / F_out``, ``upsilon = d_v / F_out``;
queries scaled by ``(d_k / heads)^-0.5`` once, for both content and relative logits; logits
``q_i.k_j + q_i.r^W[x_j - x_i] + q_i.r^H[y_j - y_i]`` with per-layer tables shared by the heads; output projection
1x1 ``d_v -> d_v``. Defaults ``kappa = 0.2, upsilon = 0.1, heads = 8`` and at least ``min_key_dims = 20`` key
channels per head are the paper's WRN setting; with the key-depth rule the paper's parameter counts come out
(AA-ResNet-50/101/152, AA-WRN-28-10 within 0.4%; ``docs/papers.md``). The rule can give ``d_k > F_out``
(stage 2 of AA-ResNet-50: 160 key channels on a 128-channel layer), as in the paper's own ResNet-50.

This suite's choices: the tables are sized for ``max_size`` (the largest feature-map side the layer accepts) and
sliced around their centre for any smaller input; a larger input raises ``ValueError``. With stride > 1 the
attention runs on the average-pooled input (so its output matches the strided conv's size). Biases: the qkv and
output 1x1 convs have biases (as plain conv layers in the paper's code listing), the conv part has none (a batch norm
follows). Attention runs through ``scaled_dot_product_attention`` with the relative logits as the additive mask
(:func:`~attnrepro.modules.functional.aa_attention`). Narrow layers reduce their heads, see
:func:`~attnrepro.modules.functional.attention_channels`. Defects of public re-implementations avoided here: the
output is reshaped head-major so channels stay in place when ``d_v / heads > 1``; the tables are registered
parameters; queries are scaled out of place.

Initialisation: the convs start with PyTorch's default here; a model's placement
(:func:`attnrepro.models.init.init_backbone`) gives them the backbone's rule. The relative tables are a deliberate
exception that the placement keeps: ``N(0, 1) * dkh^-0.5``, the usual embedding scale, so that a relative logit
``q . r`` starts on the scale of a content logit ``q . k`` rather than dominating it (a conv rule has no meaning for
an embedding table). The paper does not state its initialisation.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .explicit import _check_conv_args, attention_input, concat_conv
from .functional import _check_positive_ints, aa_attention, attention_channels

__all__ = ["AAConv2d"]


class AAConv2d(nn.Module):
    """Attention augmented convolution (Bello et al. 2019).

    Args:
        in_channels: input channels.
        out_channels: output channels ``F_out`` (conv part ``F_out - d_v`` plus attention part ``d_v``).
        kernel_size: conv part's kernel (padding ``kernel_size // 2``, no bias).
        stride: conv part's stride; the attention runs on the average-pooled input.
        heads: attention heads (reduced for narrow layers; ``.heads`` holds the value used).
        kappa: ``d_k / F_out`` (> 0; may exceed 1: the keys are not part of the output).
        upsilon: ``d_v / F_out``.
        min_key_dims: at least this many key channels per head (the paper's 20); 0: ``kappa`` alone. See
            :func:`~attnrepro.modules.functional.attention_channels`.
        relative: add relative position logits.
        max_size: largest feature-map side (of the attention input) the layer accepts; the relative tables have
            ``2 * max_size - 1`` rows.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, *,
                 heads: int = 8, kappa: float = 0.2, upsilon: float = 0.1, min_key_dims: int = 20,
                 relative: bool = True, max_size: int = 32):
        super().__init__()
        _check_conv_args(in_channels, out_channels, kernel_size, stride)
        _check_positive_ints(max_size=max_size)
        self.heads, self.dk, self.dv = attention_channels(out_channels, heads, upsilon, kappa, min_key_dims)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.relative, self.max_size = kernel_size, stride, relative, max_size
        self.dkh = self.dk // self.heads
        conv_out = out_channels - self.dv
        self.conv = (nn.Conv2d(in_channels, conv_out, kernel_size, stride, kernel_size // 2, bias=False)
                     if conv_out > 0 else None)
        self.qkv = nn.Conv2d(in_channels, 2 * self.dk + self.dv, 1)
        self.proj = nn.Conv2d(self.dv, self.dv, 1)
        if relative:
            self.rel_h = nn.Parameter(torch.randn(2 * max_size - 1, self.dkh) * self.dkh ** -0.5)
            self.rel_w = nn.Parameter(torch.randn(2 * max_size - 1, self.dkh) * self.dkh ** -0.5)
        else:
            self.register_parameter("rel_h", None)
            self.register_parameter("rel_w", None)

    def _check_size(self, H: int, W: int) -> None:
        if H > self.max_size or W > self.max_size:
            raise ValueError(f"input feature map {H}x{W} is larger than max_size={self.max_size} of this AAConv2d; "
                             f"build the layer with max_size >= {max(H, W)}")

    def tables(self, H: int, W: int):
        """The relative tables sliced for an ``H x W`` attention input: ``(2H-1, dkh)``, ``(2W-1, dkh)``."""
        self._check_size(H, W)
        c = self.max_size - 1
        return self.rel_h[c - H + 1:c + H], self.rel_w[c - W + 1:c + W]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xa = attention_input(x, self.kernel_size, self.stride)
        B, _, H, W = xa.shape
        self._check_size(H, W)  # with or without relative tables: the same limit for every layer
        qkv = self.qkv(xa).reshape(B, 2 * self.dk + self.dv, H * W)
        q, k, v = qkv.split([self.dk, self.dk, self.dv], dim=1)
        q = q.reshape(B, self.heads, self.dkh, H * W).transpose(-1, -2) * self.dkh ** -0.5
        k = k.reshape(B, self.heads, self.dkh, H * W).transpose(-1, -2)
        v = v.reshape(B, self.heads, self.dv // self.heads, H * W).transpose(-1, -2)
        rel_h, rel_w = self.tables(H, W) if self.relative else (None, None)
        o = aa_attention(q, k, v, rel_h, rel_w, H, W)
        # (B, heads, HW, dvh) -> (B, heads, dvh, HW) -> channels h * dvh + c: the same order v was split in
        return concat_conv(self.conv, x, self.proj(o.transpose(-1, -2).reshape(B, self.dv, H, W)))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"heads={self.heads}, dk={self.dk}, dv={self.dv}, relative={self.relative}, "
                f"max_size={self.max_size}")
