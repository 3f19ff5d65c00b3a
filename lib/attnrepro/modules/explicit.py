"""ExpAtt: a convolution augmented with explicitly modelled (content-free) attention.

Paper: Tan, Nguyen, Dax, Niessner, Brox. "Explicitly Modeled Attention Maps for Image Classification". AAAI 2021,
arXiv 2006.07872.

The paper's: attention maps that are a simple function of the distance between positions (a Gaussian kernel) with
a learnable radius, independent of the content; compared against AA (``augmented.py``).

This suite's reconstruction (the paper gives no equations; ``papers.md`` section 1): the layer has AA's shape,
``concat(conv_kxk(X) -> out - d_v channels, MHA_exp(X) -> d_v channels)``; ``V = conv1x1(X)`` (no bias) to ``d_v``
channels in ``heads`` heads; ``O_h = A_h V_h`` with the row-normalised kernel map of
:func:`~attnrepro.modules.functional.explicit_attention`; an output projection ``W_O`` (1x1, d_v -> d_v);
radius ``r = exp(s)``, ``s`` initialised to ``log(radius_init)``, one per layer (the paper's "single learnable
parameter") or one per head, learnable or frozen; kernels other than the Gaussian are ablations. With stride > 1
the attention runs on the average-pooled input (as AA's does). Narrow layers reduce their heads, see
:func:`~attnrepro.modules.functional.attention_channels`.

Speed (this suite's, exact): the layer runs *folded*. Because the map only mixes positions and its
rows sum to 1, ``W_O A (W_V X) + b = A (W_O W_V X) + b``, and ``W_O W_V`` sits in the conv's kernel as ``d_v`` extra
output channels, so one convolution replaces three (conv part, ``W_V``, ``W_O``). The parameters stay those of the
layer as defined. Under ``torch.jit`` tracing (how fvcore, and so ``attnrepro.flops``, sees a model) the layer runs
its definition, so the counts are those of the layer the paper describes, not of the folded computation. ``layer.fold`` (None,
True, False) overrides the choice; the tests compare both paths, values and gradients.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .functional import (_check_kernel, _check_positive_ints, adaptive_avg_pool2d, attention_channels,
                         explicit_attention, explicit_attention_map)

__all__ = ["ExpAttConv2d"]


def conv_out_size(size: int, kernel_size: int, stride: int) -> int:
    """Output side of a conv with padding ``kernel_size // 2``."""
    return (size + 2 * (kernel_size // 2) - kernel_size) // stride + 1


def attention_input(x: torch.Tensor, kernel_size: int, stride: int) -> torch.Tensor:
    """The attention branch's input: ``x`` itself, or average-pooled to the conv branch's output size."""
    H, W = x.shape[-2:]
    size = (conv_out_size(H, kernel_size, stride), conv_out_size(W, kernel_size, stride))
    if size == (H, W):
        return x
    if stride > 1 and H % stride == 0 and W % stride == 0 and size == (H // stride, W // stride):
        return F.avg_pool2d(x, stride, stride)
    return adaptive_avg_pool2d(x, size)


def _check_conv_args(in_channels, out_channels, kernel_size, stride):
    _check_positive_ints(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size, stride=stride)


def concat_conv(conv: nn.Module | None, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """The layer output of an attention-augmented conv: the conv part of ``x`` (if the layer has one) concatenated
    with the attention part ``o`` along channels."""
    return o if conv is None else torch.cat([conv(x), o], dim=1)


class ExpAttConv2d(nn.Module):
    """Convolution whose last ``d_v`` output channels are explicit (distance-kernel) attention.

    Args:
        in_channels: input channels.
        out_channels: output channels ``F_out`` (conv part ``F_out - d_v`` plus attention part ``d_v``).
        kernel_size: conv part's kernel (padding ``kernel_size // 2``, no bias: a batch norm follows).
        stride: conv part's stride; the attention part runs on the average-pooled input.
        heads: attention heads (reduced for narrow layers; ``.heads`` holds the value used).
        upsilon: ``d_v / F_out``.
        kernel: distance kernel, one of ``gaussian``, ``laplacian``, ``cauchy``, ``uniform``.
        radius_init: initial radius in feature-map pixels (> 0).
        learn_radius: learn ``s = log r`` (a parameter) or keep it frozen (a buffer). The ``uniform`` kernel
            ignores the radius, so there ``s`` is a buffer whatever ``learn_radius`` says: a parameter that never
            gets a gradient would stall DDP ("Expected to have finished reduction in the prior iteration").
        radius_per_head: one radius per head instead of one per layer.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, *,
                 heads: int = 8, upsilon: float = 0.1, kernel: str = "gaussian", radius_init: float = 2.0,
                 learn_radius: bool = True, radius_per_head: bool = False):
        super().__init__()
        _check_conv_args(in_channels, out_channels, kernel_size, stride)
        _check_kernel(kernel)
        if not (isinstance(radius_init, (int, float)) and math.isfinite(radius_init) and radius_init > 0):
            raise ValueError(f"radius_init={radius_init!r} is not valid; it must be a finite number > 0")
        self.heads, _, self.dv = attention_channels(out_channels, heads, upsilon)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.kernel = kernel_size, stride, kernel
        conv_out = out_channels - self.dv
        self.conv = (nn.Conv2d(in_channels, conv_out, kernel_size, stride, kernel_size // 2, bias=False)
                     if conv_out > 0 else None)
        self.value = nn.Conv2d(in_channels, self.dv, 1, bias=False)
        self.proj = nn.Conv2d(self.dv, self.dv, 1)
        n_r = self.heads if radius_per_head else 1
        s = torch.full((n_r,), math.log(radius_init))
        if learn_radius and kernel != "uniform":
            self.log_radius = nn.Parameter(s)
        else:
            self.register_buffer("log_radius", s)
        self._map_cache = None
        self.fold: bool | None = None  # None: folded except while traced (see forward)

    @property
    def radius(self) -> torch.Tensor:
        """Current radius ``exp(s)``, shape ``(1,)`` or ``(heads,)``."""
        return self.log_radius.exp()

    def _attn_map(self, H: int, W: int, x: torch.Tensor):
        """Dense map for the non-factorised kernels, cached on CPU while ``s`` cannot change under it: no gradient
        flows to ``s`` (frozen, or grad disabled). The cache is keyed on the *values* of ``s`` (and size, device,
        dtype), so any change of the radius -- an optimizer step, ``load_state_dict``, or a write through
        ``.data`` that bumps no version counter -- rebuilds the map.

        Off the CPU, and under ``torch.compile``, there is no cache (None: :func:`explicit_attention` builds the
        map in the forward): reading the radius' values on the host would be a device synchronisation in every
        forward, and under ``torch.compile`` a graph break (and a recompile per radius). Building the map is a few
        element-wise ops on ``(HW)^2`` entries, small beside the layer's convolution on a GPU."""
        if self.kernel in ("gaussian", "uniform"):
            return None
        s = self.log_radius
        if s.requires_grad and torch.is_grad_enabled():
            return None
        if x.device.type != "cpu" or torch.compiler.is_compiling():
            return None
        key = (H, W, str(x.device), x.dtype, tuple(s.detach().float().cpu().tolist()))
        c = self._map_cache
        if c is not None and c[0] == key:
            return c[1]
        with torch.no_grad():
            A = explicit_attention_map(H, W, s.detach().exp(), self.kernel).to(x.dtype)
        self._map_cache = (key, A)
        return A

    def _fold_taps(self, H: int, W: int) -> int | None:
        """How the attention's 1x1 input projection sits inside the conv's ``k x k`` kernel, or None when it cannot.

        Stride 1: the 1x1 conv is the kernel's centre tap. Stride ``s`` > 1 on even sides: the attention reads the
        ``s x s`` average-pooled input, which is the kernel's taps ``[p, p + s)`` (``p = k // 2``) each weighted
        ``1/s^2``; that needs ``p + s <= k``. Odd sides are pooled adaptively and are not folded."""
        k, st, p = self.kernel_size, self.stride, self.kernel_size // 2
        if st == 1:
            return 1
        if H % st == 0 and W % st == 0 and p + st <= k:
            return st
        return None

    def _forward_folded(self, x: torch.Tensor, taps: int) -> torch.Tensor:
        """The same function as :meth:`_forward_reference`, computed with one convolution instead of three.

        The attention map mixes positions only and every row sums to 1, so with one map for all heads it commutes
        with any 1x1 channel mix: ``W_O (A (W_V X)) + b_O = A ((W_O W_V) X) + b_O``. ``W_O W_V`` (a ``d_v x C_in``
        matrix) is placed in the conv's kernel as extra output channels (see :meth:`_fold_taps`), so one conv gives
        the conv part and the attention's input. With one radius per head the map differs between heads and only
        ``W_V`` is folded; ``W_O`` stays a 1x1 conv after the attention. Parameters, and so their gradients, are
        the unfolded layer's: the fold is recomputed from them at every call."""
        k, p, dv = self.kernel_size, self.kernel_size // 2, self.dv
        fold_proj = self.log_radius.numel() == 1
        wv = self.value.weight.flatten(1)                                    # (dv, C_in)
        w1 = self.proj.weight.flatten(1) @ wv if fold_proj else wv
        w_att = w1.new_zeros(dv, self.in_channels, k, k)
        w_att[:, :, p:p + taps, p:p + taps] = (w1 / (taps * taps))[:, :, None, None]
        weight = w_att if self.conv is None else torch.cat([self.conv.weight, w_att], dim=0)
        y = F.conv2d(x, weight, None, self.stride, p)
        B, _, H, W = y.shape
        v = y[:, y.shape[1] - dv:].reshape(B, self.heads, dv // self.heads, H, W)
        o = explicit_attention(v, self.radius, self.kernel, attn_map=self._attn_map(H, W, v)).reshape(B, dv, H, W)
        # the bias in the attention's dtype: under autocast an fp32 bias would make ``o``, and so the whole
        # concatenated output, fp32 (twice the activation memory)
        o = o + self.proj.bias.to(o.dtype).view(1, dv, 1, 1) if fold_proj else self.proj(o)
        return o if self.conv is None else torch.cat([y[:, :y.shape[1] - dv], o], dim=1)

    def _forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The layer as defined: conv part; ``W_V`` on the (pooled) input, attention per head, ``W_O``; concat."""
        xa = attention_input(x, self.kernel_size, self.stride)
        B, _, H, W = xa.shape
        v = self.value(xa).reshape(B, self.heads, self.dv // self.heads, H, W)
        o = explicit_attention(v, self.radius, self.kernel, attn_map=self._attn_map(H, W, v))
        return concat_conv(self.conv, x, self.proj(o.reshape(B, self.dv, H, W)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Folded (one conv instead of three) whenever the layer runs; as defined while it is being traced, so that
        # op counters (fvcore traces the model: attnrepro.flops) count the layer the paper describes.
        fold = self.fold if self.fold is not None else not torch.jit.is_tracing()
        H, W = x.shape[-2:]
        taps = self._fold_taps(H, W) if fold else None
        return self._forward_reference(x) if taps is None else self._forward_folded(x, taps)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"heads={self.heads}, dv={self.dv}, kernel={self.kernel!r}, "
                f"learn_radius={isinstance(self.log_radius, nn.Parameter)}, n_radius={self.log_radius.numel()}")
