"""The attention math as pure functions, each with a plain reference implementation that the tests compare against.

* :func:`explicit_attention` -- the content-free attention of ExpAtt (Tan et al., "Explicitly Modeled Attention Maps
  for Image Classification", AAAI 2021, arXiv 2006.07872). The paper gives no equations; the map used here (a
  distance kernel over all feature-map positions, rows normalised, radius ``r``) is this suite's reconstruction, as
  ``papers.md`` section 1 defines it. The Gaussian takes an exact factorised path ``O = G_y V G_x^T``.
* :func:`relative_logits` and :func:`aa_attention` -- the relative position logits and the attention of AA
  (Bello et al., "Attention Augmented Convolutional Networks", ICCV 2019, arXiv 1904.09925). The logits follow the
  paper; the rel-to-abs pad-and-reshape is the paper's trick, re-derived here. The CPU backward of
  :func:`aa_attention` (a row-blocked recomputation) is this suite's.
* :func:`aw_conv2d` -- the per-sample attention-weighted convolution of AW-convolution (Zhu et al., "An Attention
  Module for Convolutional Neural Networks", ICANN 2021, arXiv 2108.08205), run as one grouped convolution with the
  batch folded into the groups. How the maps are shared by output channels (``o * m // C_out``) is this suite's.

References for tests and benchmarks (plain, slow, obviously right): :func:`explicit_attention_reference`,
:func:`relative_logits_reference`, :func:`aa_attention_reference`, :func:`aw_conv2d_reference`.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F

__all__ = [
    "KERNELS", "explicit_attention", "explicit_attention_map", "explicit_attention_reference",
    "relative_logits", "relative_logits_reference", "rel_to_abs", "aa_attention", "aa_attention_reference",
    "aw_conv2d", "aw_conv2d_reference", "attention_channels", "adaptive_avg_pool2d", "adaptive_avg_pool2d_matmul",
]

KERNELS = ("gaussian", "laplacian", "cauchy", "uniform")


# ---------------------------------------------------------------------------------------------------------- helpers
def _check_positive_ints(**named) -> None:
    """Raise ValueError for the first ``name=value`` that is not an integer >= 1."""
    for name, val in named.items():
        if int(val) != val or val < 1:
            raise ValueError(f"{name}={val!r} is not valid; it must be an integer >= 1")


def attention_channels(out_channels: int, heads: int, upsilon: float, kappa: float | None = None,
                       min_key_dims: int = 0) -> tuple[int, int, int]:
    """Heads and channel depths of an attention-augmented layer: ``(heads_eff, d_k, d_v)``.

    Depths (``h = heads_eff``):

    * ``d_v = h * max(1, round(upsilon * out_channels / h))``;
    * ``d_k = h * max(1, min_key_dims, round(kappa * out_channels / h))``, or 0 when ``kappa`` is None.

    ``min_key_dims`` is the AA paper's "at least 20 key dimensions per head" (Bello et al. 2019, its WRN setting;
    with 20, this suite's AA-ResNet-50/101/152 and AA-WRN-28-10 match the paper's parameter counts to 0.4%, see
    ``docs/papers.md``). With the rule ``d_k`` may exceed ``out_channels`` (the keys are not part of the output):
    in AA-ResNet-50, stage 2's 128-channel layers get 8 x 20 = 160 key channels. ``kappa`` therefore has no upper
    bound; ``min_key_dims=0`` gives ``kappa`` alone.

    Heads of narrow layers: ``heads`` is reduced to the largest divisor ``h`` of ``heads`` such that every head
    keeps at least one value channel, ``h <= max(1, round(upsilon * out_channels))``; e.g. a 16-channel CIFAR layer
    with 8 heads and upsilon 0.1 builds with 2 heads. With ``min_key_dims=0`` the key channels limit the heads the
    same way (``h <= max(1, round(kappa * out_channels))``); with ``min_key_dims >= 1`` every head has
    ``min_key_dims`` key channels whatever ``kappa`` is, so ``kappa`` no longer limits the heads (it sets ``d_k``
    only where it asks for more than the minimum). The rule is kept as the paper states it on narrow layers too:
    a 16-channel layer (2 heads) gets ``d_k = 2 x 20 = 40`` key channels.

    Raises:
        ValueError: ``out_channels < 1``, ``heads < 1``, ``upsilon`` outside (0, 1], ``kappa`` not > 0,
            ``min_key_dims`` not an integer >= 0, or a value depth larger than ``out_channels``.
    """
    _check_positive_ints(out_channels=out_channels, heads=heads)
    if not (isinstance(upsilon, (int, float)) and 0.0 < upsilon <= 1.0):
        raise ValueError(f"upsilon={upsilon!r} is out of range; it must be in (0, 1]")
    if kappa is not None and not (isinstance(kappa, (int, float)) and math.isfinite(kappa) and kappa > 0.0):
        raise ValueError(f"kappa={kappa!r} is out of range; it must be a finite number > 0")
    if isinstance(min_key_dims, bool) or int(min_key_dims) != min_key_dims or min_key_dims < 0:
        raise ValueError(f"min_key_dims={min_key_dims!r} is not valid; it must be an integer >= 0 (0: kappa alone)")
    limit = max(1, round(upsilon * out_channels))
    if kappa is not None and min_key_dims == 0:
        limit = min(limit, max(1, round(kappa * out_channels)))
    heads_eff = max(h for h in range(1, heads + 1) if heads % h == 0 and h <= limit)
    dv = heads_eff * max(1, round(upsilon * out_channels / heads_eff))
    dk = 0 if kappa is None else heads_eff * max(1, int(min_key_dims), round(kappa * out_channels / heads_eff))
    if dv > out_channels:
        raise ValueError(f"upsilon={upsilon!r} with heads={heads_eff} gives {dv} value channels, more than "
                         f"out_channels={out_channels}; lower upsilon or heads")
    return heads_eff, dk, dv


def _check_kernel(kernel: str) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r} is not valid; choose one of: {', '.join(KERNELS)}")


def _as_radius(radius, device, dtype) -> torch.Tensor:
    r = radius if torch.is_tensor(radius) else torch.tensor(radius, dtype=dtype, device=device)
    if r.dim() == 0:
        r = r.reshape(1)
    if r.dim() != 1:
        raise ValueError(f"radius has shape {tuple(r.shape)}; it must be a scalar, (1,) or (heads,)")
    return r.to(device=device, dtype=dtype)


def _logits_from_sq_dist(sq_dist: torch.Tensor, radius: torch.Tensor, kernel: str) -> torch.Tensor:
    """Log-kernel ``log k(d; r)`` for each radius, shape ``(len(radius),) + sq_dist.shape``.

    Row normalisation is then a softmax, which is exact and cannot divide by zero for any radius > 0.
    """
    r = radius.reshape((-1,) + (1,) * sq_dist.dim())
    if kernel == "gaussian":
        return -sq_dist / (2.0 * r * r)
    if kernel == "laplacian":
        return -sq_dist.sqrt() / r
    if kernel == "cauchy":
        return -torch.log1p(sq_dist / (r * r))
    return torch.zeros_like(sq_dist).expand(radius.shape[0], *sq_dist.shape)  # uniform


_DIST_CACHE: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()
_DIST_CACHE_SIZE = 16


def _sq_dist(H: int, W: int, device, dtype) -> torch.Tensor:
    """Squared Euclidean distances between all positions of an H x W map, (HW, HW), row-major; small LRU cache.

    The cache holds constants only (no radius, no autograd graph), so it is never stale.
    """
    key = (H, W, str(device), dtype)
    d = _DIST_CACHE.get(key)
    if d is None:
        y = torch.arange(H, device=device, dtype=dtype).repeat_interleave(W)
        x = torch.arange(W, device=device, dtype=dtype).repeat(H)
        d = (y[:, None] - y[None, :]) ** 2 + (x[:, None] - x[None, :]) ** 2
        _DIST_CACHE[key] = d
        if len(_DIST_CACHE) > _DIST_CACHE_SIZE:
            _DIST_CACHE.popitem(last=False)
    else:
        _DIST_CACHE.move_to_end(key)
    return d


def _gauss_1d(n: int, radius: torch.Tensor, device, dtype) -> torch.Tensor:
    """Row-normalised 1-D Gaussian matrices, (len(radius), n, n)."""
    i = torch.arange(n, device=device, dtype=dtype)
    sq = (i[:, None] - i[None, :]) ** 2
    return torch.softmax(_logits_from_sq_dist(sq, radius, "gaussian"), dim=-1)


# ---------------------------------------------------------------------------------------------- explicit attention
def explicit_attention_map(H: int, W: int, radius, kernel: str = "gaussian", *, device=None,
                           dtype=None) -> torch.Tensor:
    """The dense explicit attention map ``A`` of shape ``(n_r, H*W, H*W)``, ``n_r = radius.numel()``.

    ``A[h, p, q] = k(|p - q|; r_h) / sum_q' k(|p - q'|; r_h)`` with row-major positions ``p = y * W + x`` and the
    Euclidean distance between pixel centres; every row sums to 1 (borders included). Differentiable in ``radius``.

    Args:
        H, W: feature-map size.
        radius: positive float or tensor of shape ``()``, ``(1,)`` or ``(heads,)``.
        kernel: one of :data:`KERNELS` (``uniform`` ignores the radius).
        device, dtype: of the result when ``radius`` is not a tensor (default: float32 on CPU).
    """
    _check_kernel(kernel)
    if torch.is_tensor(radius):
        device = radius.device if device is None else device
        dtype = radius.dtype if dtype is None else dtype
    dtype = dtype or torch.get_default_dtype()
    r = _as_radius(radius, device, dtype)
    return torch.softmax(_logits_from_sq_dist(_sq_dist(H, W, r.device, dtype), r, kernel), dim=-1)


def _check_v(v: torch.Tensor) -> None:
    if v.dim() != 5:
        raise ValueError(f"v has shape {tuple(v.shape)}; it must be (B, heads, d, H, W)")


def _check_heads(r: torch.Tensor, heads: int) -> None:
    if r.shape[0] not in (1, heads):
        raise ValueError(f"radius has {r.shape[0]} values; it must have 1 or heads={heads}")


def explicit_attention(v: torch.Tensor, radius, kernel: str = "gaussian", *,
                       attn_map: torch.Tensor | None = None) -> torch.Tensor:
    """Content-free attention ``O[b, h, :, p] = sum_q A_h[p, q] v[b, h, :, q]`` with the map of
    :func:`explicit_attention_map`.

    ``gaussian`` runs the exact factorised path ``O = G_y V G_x^T`` (an H x H and a W x W row-normalised matrix
    per radius: the 2-D kernel and its row sums both factorise), O(HW(H+W)) work instead of O((HW)^2).
    ``uniform`` is the global mean (exact). ``laplacian`` and ``cauchy`` apply the dense ``(n_r, HW, HW)`` map,
    built from a cached distance matrix; a caller that knows the radius is constant (a frozen radius, or no
    gradient) may pass that map as ``attn_map`` to skip building it (see :class:`ExpAttConv2d`).

    Args:
        v: values, ``(B, heads, d, H, W)``.
        radius: positive tensor broadcastable to ``(heads,)`` (shape ``()``, ``(1,)`` or ``(heads,)``), or a float.
        kernel: one of :data:`KERNELS`.
        attn_map: optional precomputed dense map ``(1 or heads, HW, HW)`` (ignored for gaussian and uniform).

    Returns:
        tensor of the same shape as ``v``, differentiable in ``v`` and ``radius``.
    """
    _check_kernel(kernel)
    _check_v(v)
    B, heads, d, H, W = v.shape
    low = v.dtype in (torch.float16, torch.bfloat16)
    r = _as_radius(radius, v.device, torch.float32 if low else v.dtype)   # maps are built in >= float32
    _check_heads(r, heads)
    if kernel == "uniform":
        return v.mean(dim=(-2, -1), keepdim=True).expand_as(v)
    if kernel == "gaussian":
        gy = _gauss_1d(H, r, v.device, r.dtype)[:, None].to(v.dtype)  # (n_r, 1, H, H)
        gx = _gauss_1d(W, r, v.device, r.dtype)[:, None].to(v.dtype)  # (n_r, 1, W, W)
        # O = G_y V G_x^T, written with V on the left of both matmuls (so op counters see the full batch)
        out = v @ gx.transpose(-1, -2)
        return (out.transpose(-1, -2) @ gy.transpose(-1, -2)).transpose(-1, -2)
    A = (explicit_attention_map(H, W, r, kernel) if attn_map is None else attn_map).to(v.dtype)
    if A.dim() != 3 or tuple(A.shape[1:]) != (H * W, H * W) or A.shape[0] not in (1, heads):
        raise ValueError(f"attn_map has shape {tuple(A.shape)}; it must be (1 or {heads}, {H * W}, {H * W})")
    if A.shape[0] == 1:
        # one map for every head: a single (B*heads*d, HW) x (HW, HW) GEMM. (A broadcast batched matmul would
        # materialise the map once per batch element and head, B*heads copies of an HW x HW matrix.)
        return (v.reshape(B * heads * d, H * W) @ A[0].transpose(0, 1)).reshape(B, heads, d, H, W)
    vh = v.transpose(0, 1).reshape(heads, B * d, H * W)              # per head: (B*d, HW) x (HW, HW)
    out = torch.bmm(vh, A.transpose(-1, -2))
    return out.reshape(heads, B, d, H, W).transpose(0, 1)


def explicit_attention_reference(v: torch.Tensor, radius, kernel: str = "gaussian") -> torch.Tensor:
    """Plain reference of :func:`explicit_attention`, written from the definition (``papers.md`` section 1) and
    sharing no code with the fast path: pixel coordinates ``(p // W, p % W)``, the distance ``d`` between them,
    the kernel formula itself (``gaussian`` exp(-d^2 / (2 r^2)), ``laplacian`` exp(-d / r), ``cauchy``
    1 / (1 + (d / r)^2), ``uniform`` 1), each row divided by its sum, then ``O[p] = sum_q A[p, q] v[q]``.
    Differentiable in ``v`` and ``radius``. For tests: memory O((HW)^2) per radius, no care for underflow (a
    Gaussian row keeps at least its own position, ``exp(0) = 1``)."""
    _check_kernel(kernel)
    _check_v(v)
    B, heads, d, H, W = v.shape
    r = _as_radius(radius, v.device, v.dtype)
    _check_heads(r, heads)
    p = torch.arange(H * W, device=v.device)
    y, x = (p // W).to(v.dtype), (p % W).to(v.dtype)
    dist = torch.sqrt((y[:, None] - y[None, :]) ** 2 + (x[:, None] - x[None, :]) ** 2)   # (HW, HW)
    maps = []
    for rh in r.expand(heads):
        if kernel == "gaussian":
            k = torch.exp(-dist ** 2 / (2 * rh ** 2))
        elif kernel == "laplacian":
            k = torch.exp(-dist / rh)
        elif kernel == "cauchy":
            k = 1 / (1 + (dist / rh) ** 2)
        else:
            k = torch.ones_like(dist)
        maps.append(k / k.sum(dim=1, keepdim=True))
    A = torch.stack(maps)                                                               # (heads, HW, HW)
    out = torch.einsum("hpq,bhdq->bhdp", A, v.reshape(B, heads, d, H * W))
    return out.reshape(v.shape)


# ---------------------------------------------------------------------------------------------- relative logits
def rel_to_abs(x: torch.Tensor) -> torch.Tensor:
    """Relative to absolute indexing along the last two dims: ``x (..., L, 2L-1) -> out (..., L, L)`` with
    ``out[..., i, j] = x[..., i, j - i + L - 1]``, by pad-and-reshape (pads and views, no gather)."""
    *lead, L, M = x.shape
    if M != 2 * L - 1:
        raise ValueError(f"rel_to_abs needs (..., L, 2L-1); got {tuple(x.shape)}")
    x = F.pad(x, (0, 1))                              # (..., L, 2L)
    x = x.reshape(*lead, 2 * L * L)
    x = F.pad(x, (0, L - 1))                          # (..., 2L^2 + L - 1) = (L + 1) * (2L - 1)
    x = x.reshape(*lead, L + 1, 2 * L - 1)
    return x[..., :L, L - 1:]


def _check_rel(q, rel_h, rel_w, H, W):
    if q.dim() != 4 or q.shape[2] != H * W:
        raise ValueError(f"q has shape {tuple(q.shape)}; it must be (B, heads, H*W={H * W}, dkh)")
    dkh = q.shape[-1]
    if tuple(rel_h.shape) != (2 * H - 1, dkh) or tuple(rel_w.shape) != (2 * W - 1, dkh):
        raise ValueError(f"rel_h {tuple(rel_h.shape)} / rel_w {tuple(rel_w.shape)} must be "
                         f"({2 * H - 1}, {dkh}) / ({2 * W - 1}, {dkh})")


def _relative_parts(q, rel_h, rel_w, H, W):
    """The two factors of AA's relative logits: ``lw (B, heads, HW, W)`` indexed by the key column and
    ``lh (B, heads, HW, H)`` indexed by the key row, so that ``logits[p, (yj, xj)] = lw[p, xj] + lh[p, yj]``."""
    B, nh, _, dkh = q.shape
    q5 = q.reshape(B, nh, H, W, dkh)
    lw = rel_to_abs(q5 @ rel_w.t())                                   # (B, nh, H, W(xi), W(xj))
    lh = rel_to_abs(q5.transpose(2, 3) @ rel_h.t())                   # (B, nh, W(xi), H(yi), H(yj))
    lh = lh.transpose(2, 3)                                           # (B, nh, H(yi), W(xi), H(yj))
    return lw.reshape(B, nh, H * W, W), lh.reshape(B, nh, H * W, H)


def _combine(lw, lh, H, W):
    B, nh, L, _ = lw.shape
    return (lh[..., :, None] + lw[..., None, :]).reshape(B, nh, L, H * W)


def relative_logits(q: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """AA's relative position logits, ``(B, heads, HW, HW)``:
    ``[p = (yi, xi), q = (yj, xj)] = q_p . rel_w[xj - xi + W - 1] + q_p . rel_h[yj - yi + H - 1]``.

    Computed as ``q @ rel^T`` (``(..., 2L-1)`` per axis) and :func:`rel_to_abs`; no ``(HW, HW, dkh)`` tensor is
    built, and the only ``(HW, HW)``-sized tensor is the result.

    Args:
        q: queries (already scaled), ``(B, heads, H*W, dkh)``, row-major positions.
        rel_h: ``(2H-1, dkh)`` table over row offsets; rel_w: ``(2W-1, dkh)`` over column offsets.
    """
    _check_rel(q, rel_h, rel_w, H, W)
    lw, lh = _relative_parts(q, rel_h, rel_w, H, W)
    return _combine(lw, lh, H, W)


def relative_logits_reference(q: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor, H: int, W: int
                              ) -> torch.Tensor:
    """Brute-force :func:`relative_logits` by the definition: gathers an ``(HW, HW, dkh)`` table of relative
    embeddings and contracts it with the queries. For tests only (memory O((HW)^2 dkh))."""
    _check_rel(q, rel_h, rel_w, H, W)
    y = torch.arange(H, device=q.device).repeat_interleave(W)
    x = torch.arange(W, device=q.device).repeat(H)
    emb = rel_w[x[None, :] - x[:, None] + W - 1] + rel_h[y[None, :] - y[:, None] + H - 1]   # (HW, HW, dkh)
    return torch.einsum("bnpd,pqd->bnpq", q, emb)


# ---------------------------------------------------------------------------------------------- AA attention
_BLOCK_ELEMS = 1 << 18   # elements of one (rows x keys) block in the CPU backward of aa_attention


class _RelativeAttention(torch.autograd.Function):
    """``softmax(q k^T + lh[.., :, None] + lw[.., None, :]) v`` (no scaling; q is pre-scaled).

    Forward: one call of ``scaled_dot_product_attention`` with the relative logits as its additive mask (the fused
    CPU kernel; nothing of size (HW)^2 is saved). Backward: recomputes the probabilities block by block of query
    rows and reduces the mask gradient straight onto ``lw`` and ``lh``, so no (HW)^2 gradient is ever whole.
    (PyTorch's fused CPU kernel has no gradient for the mask; without this it falls back to the plain math path.)
    """

    @staticmethod
    def forward(ctx, q, k, v, lw, lh):
        H, W = lh.shape[-1], lw.shape[-1]
        mask = _combine(lw, lh, H, W)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
        ctx.save_for_backward(q, k, v, lw, lh, out)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        q, k, v, lw, lh, out = ctx.saved_tensors
        B, nh, L, dk = q.shape
        dv_ = v.shape[-1]
        H, W = lh.shape[-1], lw.shape[-1]
        BH = B * nh
        q3, k3, v3 = q.reshape(BH, L, dk), k.reshape(BH, L, dk), v.reshape(BH, L, dv_)
        lw3, lh3 = lw.reshape(BH, L, W), lh.reshape(BH, L, H)
        do3, o3 = dout.reshape(BH, L, dv_), out.reshape(BH, L, dv_)
        delta = (do3 * o3).sum(-1, keepdim=True)                          # (BH, L, 1)
        dq = torch.empty_like(q3)
        dk_ = torch.zeros_like(k3)
        dvv = torch.zeros_like(v3)
        dlw = torch.empty_like(lw3)
        dlh = torch.empty_like(lh3)
        kt, vt = k3.transpose(1, 2).contiguous(), v3.transpose(1, 2).contiguous()
        g = max(1, min(BH, _BLOCK_ELEMS // (L * L)))                      # batch-heads per block
        n = max(1, min(L, _BLOCK_ELEMS // (g * L)))                       # query rows per block
        for b0 in range(0, BH, g):
            b1 = min(BH, b0 + g)
            for s in range(0, L, n):
                e = min(L, s + n)
                qb = q3[b0:b1, s:e]
                S = torch.bmm(qb, kt[b0:b1])
                S5 = S.view(b1 - b0, e - s, H, W)
                S5.add_(lh3[b0:b1, s:e, :, None]).add_(lw3[b0:b1, s:e, None, :])
                P = torch.softmax(S, dim=-1)
                dob = do3[b0:b1, s:e]
                dS = torch.bmm(dob, vt[b0:b1])
                dS.sub_(delta[b0:b1, s:e]).mul_(P)
                dq[b0:b1, s:e] = torch.bmm(dS, k3[b0:b1])
                dk_[b0:b1].baddbmm_(dS.transpose(1, 2), qb)
                dvv[b0:b1].baddbmm_(P.transpose(1, 2), dob)
                dS5 = dS.view(b1 - b0, e - s, H, W)
                dlw[b0:b1, s:e] = dS5.sum(-2)
                dlh[b0:b1, s:e] = dS5.sum(-1)
        return (dq.view_as(q), dk_.view_as(k), dvv.view_as(v), dlw.view_as(lw), dlh.view_as(lh))


def aa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor | None = None,
                 rel_w: torch.Tensor | None = None, H: int | None = None, W: int | None = None, *,
                 pad_to: int | None = None) -> torch.Tensor:
    """AA's multi-head attention ``softmax(q k^T + R) v`` with relative logits ``R`` (:func:`relative_logits`),
    through ``torch.nn.functional.scaled_dot_product_attention`` with ``R`` as the additive mask and ``scale=1``:
    the queries must come scaled by ``dkh^-0.5`` already (they are scaled once, for both content and relative
    logits, as in the paper).

    On CUDA (and whenever no gradient is needed) the mask goes to SDPA as is, so the fused kernels serve. On CPU
    with gradients, a custom autograd function runs the same SDPA forward and a blocked backward (see
    :class:`_RelativeAttention`) because the fused CPU kernel gives no gradient for a mask.

    Args:
        q, k: ``(B, heads, HW, dkh)``; v: ``(B, heads, HW, dvh)``.
        rel_h, rel_w: tables ``(2H-1, dkh)``, ``(2W-1, dkh)``; None for no relative logits.
        H, W: feature-map size (needed with tables).
        pad_to: the padded head size is a multiple of this (see :func:`_same_head_dim`); None: 8 on CUDA, where
            SDPA's memory-efficient kernel needs it in bf16 and fp16 (without it SDPA falls back to its math
            kernel, which keeps the fp32 probabilities for backward), 1 elsewhere (padding costs CPU time).

    Returns:
        ``(B, heads, HW, dvh)``.
    """
    if rel_h is None and rel_w is None:
        qp, kp, vp, dvh = _same_head_dim(q, k, v, pad_to)
        return F.scaled_dot_product_attention(qp, kp, vp, scale=1.0)[..., :dvh]
    if rel_h is None or rel_w is None or H is None or W is None:
        raise ValueError("aa_attention needs both rel_h and rel_w, and H and W, or neither table")
    _check_rel(q, rel_h, rel_w, H, W)
    lw, lh = _relative_parts(q, rel_h, rel_w, H, W)
    qp, kp, vp, dvh = _same_head_dim(q, k, v, pad_to)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, lw, lh))
    plain = torch.jit.is_tracing() or torch.compiler.is_compiling()   # tracers (fvcore) and compilers see SDPA
    if q.device.type == "cpu" and needs_grad and not plain:
        return _RelativeAttention.apply(qp, kp, vp, lw, lh)[..., :dvh]
    return F.scaled_dot_product_attention(qp, kp, vp, attn_mask=_combine(lw, lh, H, W), scale=1.0)[..., :dvh]


#: the head-size multiple SDPA's memory-efficient CUDA kernel needs in bf16 / fp16 (the flash kernel is ruled out by
#: the relative-logits mask)
CUDA_HEAD_MULTIPLE = 8


def _same_head_dim(q, k, v, pad_to: int | None = None):
    """Zero-pad q, k, v to one contiguous head size, a multiple of ``pad_to`` (None: :data:`CUDA_HEAD_MULTIPLE` on
    CUDA, 1 elsewhere). SDPA's fused kernels need equal key and value head sizes and a contiguous last dimension,
    and on CUDA in 16-bit a head size divisible by 8; otherwise PyTorch silently takes the slow "math" path, which
    also keeps the mask and softmax for backward. Zero channels change no ``q . k`` (the scale is passed
    explicitly) and give value channels that are exactly zero, sliced off by the caller. Not under ``jit.trace``
    (fvcore's counting), so that the counted MACs are the attention's own, not the padding's. Returns
    ``(q, k, v, dvh)``."""
    dvh = v.shape[-1]
    if torch.jit.is_tracing():
        return q, k, v, dvh
    m = pad_to if pad_to is not None else (CUDA_HEAD_MULTIPLE if q.is_cuda else 1)
    d = -(-max(q.shape[-1], dvh) // m) * m
    q, k, v = (F.pad(t, (0, d - t.shape[-1])) if t.shape[-1] < d else t for t in (q, k, v))
    return q.contiguous(), k.contiguous(), v.contiguous(), dvh


def aa_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor | None = None,
                           rel_w: torch.Tensor | None = None, H: int | None = None, W: int | None = None, *,
                           brute_force: bool = False) -> torch.Tensor:
    """Naive :func:`aa_attention`: explicit logits ``q k^T`` plus relative logits, softmax, matmul (every
    ``(B, heads, HW, HW)`` intermediate materialised and kept for backward). The relative logits come from
    :func:`relative_logits` (the rel-to-abs trick), or from :func:`relative_logits_reference` with
    ``brute_force=True``. The benchmark's "naive explicit-logits" baseline; also the tests' reference."""
    logits = q @ k.transpose(-1, -2)
    if rel_h is not None:
        rel = relative_logits_reference if brute_force else relative_logits
        logits = logits + rel(q, rel_h, rel_w, H, W)
    return torch.softmax(logits, dim=-1) @ v


# ---------------------------------------------------------------------------------------------- pooling
def _pool_matrix(n: int, k: int, device, dtype) -> torch.Tensor:
    """``(k, n)``: row ``i`` averages the inputs ``[floor(i n / k), ceil((i + 1) n / k))``, the bins of
    ``adaptive_avg_pool``."""
    i = torch.arange(k, device=device)
    start = torch.div(i * n, k, rounding_mode="floor")
    end = torch.div((i + 1) * n + k - 1, k, rounding_mode="floor")
    j = torch.arange(n, device=device)
    inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
    return inside.to(dtype) / (end - start).to(dtype)[:, None]


def adaptive_avg_pool2d_matmul(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, size)`` as two matrix products, ``P_h x P_w^T``: the same bins and the same
    values (up to the order of the sums), and a backward that is deterministic on CUDA, where
    ``adaptive_avg_pool2d``'s is not (``torch.use_deterministic_algorithms`` makes it raise)."""
    kh, kw = (size, size) if isinstance(size, int) else size
    H, W = x.shape[-2:]
    ph = _pool_matrix(H, kh, x.device, x.dtype)
    pw = _pool_matrix(W, kw, x.device, x.dtype)
    return ph @ x @ pw.transpose(0, 1)


def adaptive_avg_pool2d(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """``F.adaptive_avg_pool2d``, except on CUDA under ``torch.use_deterministic_algorithms(True)`` (the
    ``deterministic`` run key), where it is :func:`adaptive_avg_pool2d_matmul`. Everywhere else the plain op, so
    CPU numerics do not change."""
    if x.is_cuda and torch.are_deterministic_algorithms_enabled():
        return adaptive_avg_pool2d_matmul(x, size)
    return F.adaptive_avg_pool2d(x, size)


# ---------------------------------------------------------------------------------------------- AW convolution
def _check_aw(x, weight, attn):
    if x.dim() != 4 or weight.dim() != 4 or attn.dim() != 5:
        raise ValueError(f"aw_conv2d needs x (B, C_in, H, W), weight (C_out, C_in, kh, kw) and attn "
                         f"(B, m, C_in, kh, kw); got {tuple(x.shape)}, {tuple(weight.shape)}, {tuple(attn.shape)}")
    B, C_in = x.shape[:2]
    C_out = weight.shape[0]
    if weight.shape[1] != C_in or attn.shape[0] != B or tuple(attn.shape[2:]) != tuple(weight.shape[1:]):
        raise ValueError(f"aw_conv2d shapes disagree: x {tuple(x.shape)}, weight {tuple(weight.shape)}, "
                         f"attn {tuple(attn.shape)}; attn must be (B, m, C_in, kh, kw)")
    m = attn.shape[1]
    if not 1 <= m:
        raise ValueError(f"attn has m={m} maps; it needs at least 1")
    return B, C_in, C_out, m


def _autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast computes convolutions in on ``x``'s device, or None outside autocast."""
    dev = x.device.type
    try:
        return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
    except RuntimeError:     # a device type autocast does not know (the meta device of the preflight's size check)
        return None


def _map_index(C_out: int, m: int, device) -> torch.Tensor:
    return torch.div(torch.arange(C_out, device=device) * m, C_out, rounding_mode="floor")


def aw_conv2d(x: torch.Tensor, weight: torch.Tensor, attn: torch.Tensor, bias: torch.Tensor | None = None,
              stride=1, padding=0, dilation=1) -> torch.Tensor:
    """Attention-weighted convolution: sample ``b``, output channel ``o`` uses the kernel
    ``weight[o] * (1 + attn[b, o * m // C_out])``.

    Runs as one grouped convolution with the batch folded into the groups: ``x`` viewed as
    ``(1, B*C_in, H, W)``, the per-sample kernels as ``(B*C_out, C_in, kh, kw)``, ``groups=B``. Under autocast the
    kernels are built in the autocast dtype (the dtype the convolution runs in).

    Args:
        x: ``(B, C_in, H, W)``; weight: ``(C_out, C_in, kh, kw)``; attn: ``(B, m, C_in, kh, kw)``;
        bias: ``(C_out,)`` or None; stride, padding, dilation: as :func:`torch.nn.functional.conv2d`.
    """
    B, C_in, C_out, m = _check_aw(x, weight, attn)
    low = _autocast_dtype(x)
    if low is not None:
        # under autocast the (B * C_out, C_in, kh, kw) kernels are built in the autocast dtype: an fp32 weight times
        # a 16-bit (1 + attn) would give them in fp32 (for WRN-28-10 at B = 128 about 15 GB written per forward),
        # which the grouped conv then casts down anyway
        weight, attn = weight.to(low), attn.to(low)
        bias = None if bias is None else bias.to(low)
    if C_out % m == 0:
        # map j serves the C_out // m consecutive output channels j * C_out // m ...: a broadcast, no gather
        w = weight.view(1, m, C_out // m, *weight.shape[1:]) * (1.0 + attn).unsqueeze(2)
        w = w.reshape(B * C_out, *weight.shape[1:])
    else:
        a = attn.index_select(1, _map_index(C_out, m, attn.device))  # (B, C_out, C_in, k, k)
        w = (weight * (1.0 + a)).reshape(B * C_out, *weight.shape[1:])
    b = None if bias is None else bias.repeat(B)
    out = F.conv2d(x.reshape(1, B * C_in, *x.shape[2:]), w, b, stride, padding, dilation, groups=B)
    return out.reshape(B, C_out, *out.shape[2:])


def aw_conv2d_reference(x: torch.Tensor, weight: torch.Tensor, attn: torch.Tensor, bias: torch.Tensor | None = None,
                        stride=1, padding=0, dilation=1) -> torch.Tensor:
    """Plain reference of :func:`aw_conv2d`: a Python loop over the batch, one ``F.conv2d`` per sample with that
    sample's kernel (the per-sample loop the grouped convolution replaces; the benchmark's baseline)."""
    B, C_in, C_out, m = _check_aw(x, weight, attn)
    index = [(o * m) // C_out for o in range(C_out)]
    outs = []
    for b in range(B):
        kern = weight * (1.0 + attn[b, index])
        outs.append(F.conv2d(x[b:b + 1], kern, bias, stride, padding, dilation))
    return torch.cat(outs)
