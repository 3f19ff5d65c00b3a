"""The functional core agrees with its plain references, on values and gradients."""
import math

import pytest
import torch
import torch.nn.functional as F

from attnrepro.modules import functional as Fn
from attnrepro.modules.functional import KERNELS

D = torch.float64


def _close(a, b, tol=1e-10):
    assert a.shape == b.shape
    assert torch.allclose(a, b, atol=tol, rtol=tol), (a - b).abs().max().item()


# ---------------------------------------------------------------------------------------------- explicit attention
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("n_radius", [1, 3])
def test_explicit_attention_matches_reference_values_and_grads(kernel, n_radius):
    torch.manual_seed(0)
    v = torch.randn(2, 3, 4, 7, 9, dtype=D, requires_grad=True)
    radius = torch.tensor([1.3, 0.7, 2.9][:n_radius], dtype=D, requires_grad=True)
    out = Fn.explicit_attention(v, radius, kernel)
    ref = Fn.explicit_attention_reference(v, radius, kernel)
    _close(out, ref)
    g = torch.randn_like(out)
    ga = torch.autograd.grad(out, [v, radius], g, allow_unused=True)
    gb = torch.autograd.grad(ref, [v, radius], g, allow_unused=True)
    _close(ga[0], gb[0])
    if kernel == "uniform":  # the radius is ignored
        assert ga[1] is None or torch.all(ga[1] == 0)
    else:
        assert gb[1] is not None and gb[1].abs().sum() > 0
        _close(ga[1], gb[1])


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian", "cauchy"])
def test_explicit_attention_gradcheck(kernel):
    torch.manual_seed(1)
    v = torch.randn(1, 2, 2, 3, 4, dtype=D, requires_grad=True)
    r = torch.tensor([0.8, 1.7], dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, r: Fn.explicit_attention(v, r, kernel), (v, r))


def test_explicit_attention_scalar_radius_and_float():
    v = torch.randn(2, 2, 3, 5, 4, dtype=D)
    a = Fn.explicit_attention(v, torch.tensor(1.5, dtype=D))
    b = Fn.explicit_attention(v, 1.5)
    _close(a, b)


@pytest.mark.parametrize("kernel", KERNELS)
def test_map_rows_sum_to_one_and_shape(kernel):
    A = Fn.explicit_attention_map(7, 9, torch.tensor([0.5, 3.0], dtype=D), kernel)
    assert A.shape == (2, 63, 63)
    _close(A.sum(-1), torch.ones(2, 63, dtype=D))
    assert (A >= 0).all()
    if kernel != "uniform":
        # rows are peaked at their own position, including corner and border rows
        for p in (0, 8, 62, 4 * 9 + 4):
            assert A[0, p].argmax().item() == p


def test_map_is_the_definition():
    H, W, r = 3, 4, 1.7
    A = Fn.explicit_attention_map(H, W, torch.tensor([r], dtype=D), "laplacian")[0]
    p, q = 1 * W + 2, 2 * W + 0
    k = [math.exp(-math.hypot(y - 1, x - 2) / r) for y in range(H) for x in range(W)]
    assert A[p, q].item() == pytest.approx(k[q] / sum(k), rel=1e-12)
    g = Fn.explicit_attention_map(H, W, torch.tensor([r], dtype=D), "gaussian")[0]
    kg = [math.exp(-((y - 1) ** 2 + (x - 2) ** 2) / (2 * r * r)) for y in range(H) for x in range(W)]
    assert g[p, q].item() == pytest.approx(kg[q] / sum(kg), rel=1e-12)
    c = Fn.explicit_attention_map(H, W, torch.tensor([r], dtype=D), "cauchy")[0]
    kc = [1 / (1 + ((y - 1) ** 2 + (x - 2) ** 2) / r ** 2) for y in range(H) for x in range(W)]
    assert c[p, q].item() == pytest.approx(kc[q] / sum(kc), rel=1e-12)


def test_uniform_is_global_mean():
    v = torch.randn(2, 3, 4, 5, 6, dtype=D)
    out = Fn.explicit_attention(v, torch.tensor([1.0], dtype=D), "uniform")
    _close(out, v.mean(dim=(-2, -1), keepdim=True).expand_as(v))


def test_gaussian_tiny_and_huge_radius():
    v = torch.randn(1, 1, 2, 5, 6, dtype=D)
    _close(Fn.explicit_attention(v, torch.tensor([1e-3], dtype=D)), v)          # identity
    far = Fn.explicit_attention(v, torch.tensor([1e4], dtype=D))
    _close(far, v.mean(dim=(-2, -1), keepdim=True).expand_as(v), tol=1e-6)  # global mean
    assert torch.isfinite(Fn.explicit_attention(v, torch.tensor([1e-6], dtype=D), "cauchy")).all()


def test_explicit_attention_bad_args():
    v = torch.randn(1, 2, 3, 4, 4)
    with pytest.raises(ValueError, match="gaussian, laplacian, cauchy, uniform"):
        Fn.explicit_attention(v, torch.tensor([1.0]), "box")
    with pytest.raises(ValueError, match="heads=2"):
        Fn.explicit_attention(v, torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"\(B, heads, d, H, W\)"):
        Fn.explicit_attention(v[0], torch.tensor([1.0]))


def test_explicit_attention_passed_map_is_used():
    v = torch.randn(1, 2, 3, 4, 5, dtype=D)
    A = Fn.explicit_attention_map(4, 5, torch.tensor([1.1], dtype=D), "cauchy")
    _close(Fn.explicit_attention(v, torch.tensor([1.1], dtype=D), "cauchy", attn_map=A),
           Fn.explicit_attention_reference(v, torch.tensor([1.1], dtype=D), "cauchy"))
    with pytest.raises(ValueError, match="attn_map"):
        Fn.explicit_attention(v, torch.tensor([1.1], dtype=D), "cauchy", attn_map=A[:, :5])


# ---------------------------------------------------------------------------------------------- relative logits
def test_rel_to_abs_definition():
    L = 5
    x = torch.randn(2, L, 2 * L - 1)
    out = Fn.rel_to_abs(x)
    for i in range(L):
        for j in range(L):
            assert torch.equal(out[:, i, j], x[:, i, j - i + L - 1])


@pytest.mark.parametrize("H,W", [(7, 9), (4, 4), (1, 3)])
def test_relative_logits_matches_brute_force(H, W):
    torch.manual_seed(0)
    q = torch.randn(2, 3, H * W, 4, dtype=D, requires_grad=True)
    rh = torch.randn(2 * H - 1, 4, dtype=D, requires_grad=True)
    rw = torch.randn(2 * W - 1, 4, dtype=D, requires_grad=True)
    out = Fn.relative_logits(q, rh, rw, H, W)
    ref = Fn.relative_logits_reference(q, rh, rw, H, W)
    assert out.shape == (2, 3, H * W, H * W)
    _close(out, ref)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, [q, rh, rw], g), torch.autograd.grad(ref, [q, rh, rw], g)):
        _close(a, b)


def test_relative_logits_reference_is_the_definition():
    H, W, d = 3, 4, 2
    q = torch.randn(1, 1, H * W, d, dtype=D)
    rh, rw = torch.randn(2 * H - 1, d, dtype=D), torch.randn(2 * W - 1, d, dtype=D)
    ref = Fn.relative_logits_reference(q, rh, rw, H, W)
    p, k = 1 * W + 3, 2 * W + 0
    want = q[0, 0, p] @ rw[0 - 3 + W - 1] + q[0, 0, p] @ rh[2 - 1 + H - 1]
    assert ref[0, 0, p, k].item() == pytest.approx(want.item(), rel=1e-12)


def test_relative_logits_bad_shapes():
    q = torch.randn(1, 1, 12, 2)
    with pytest.raises(ValueError, match=r"\(5, 2\)"):
        Fn.relative_logits(q, torch.randn(4, 2), torch.randn(7, 2), 3, 4)


# ---------------------------------------------------------------------------------------------- AA attention
@pytest.mark.parametrize("relative", [True, False])
@pytest.mark.parametrize("grad", [True, False])
def test_aa_attention_matches_reference(relative, grad):
    torch.manual_seed(0)
    H, W = 5, 7
    mk = lambda *s: torch.randn(*s, dtype=D, requires_grad=grad)  # noqa: E731
    q, k, v = mk(2, 2, H * W, 3), mk(2, 2, H * W, 3), mk(2, 2, H * W, 5)
    rh, rw = (mk(2 * H - 1, 3), mk(2 * W - 1, 3)) if relative else (None, None)
    args = (q, k, v, rh, rw, H, W)
    out = Fn.aa_attention(*args)
    ref = Fn.aa_attention_reference(*args, brute_force=True)
    _close(out, ref)
    if grad:
        ins = [t for t in (q, k, v, rh, rw) if t is not None]
        g = torch.randn_like(out)
        for a, b in zip(torch.autograd.grad(out, ins, g), torch.autograd.grad(ref, ins, g)):
            _close(a, b)


def test_aa_attention_gradcheck_and_blocking(monkeypatch):
    torch.manual_seed(2)
    H, W = 3, 4
    q, k = torch.randn(2, 2, H * W, 2, dtype=D, requires_grad=True), torch.randn(2, 2, H * W, 2, dtype=D,
                                                                                   requires_grad=True)
    v = torch.randn(2, 2, H * W, 3, dtype=D, requires_grad=True)
    rh, rw = torch.randn(2 * H - 1, 2, dtype=D, requires_grad=True), torch.randn(2 * W - 1, 2, dtype=D,
                                                                                  requires_grad=True)
    monkeypatch.setattr(Fn, "_BLOCK_ELEMS", 5 * H * W)  # several row blocks, ragged last block
    assert torch.autograd.gradcheck(lambda *t: Fn.aa_attention(*t, H, W), (q, k, v, rh, rw), fast_mode=True)


def test_aa_attention_float32_matches_naive():
    torch.manual_seed(3)
    H, W = 6, 5
    q, k, v = (torch.randn(2, 4, H * W, 4, requires_grad=True) for _ in range(3))
    rh, rw = torch.randn(2 * H - 1, 4, requires_grad=True), torch.randn(2 * W - 1, 4, requires_grad=True)
    out, ref = Fn.aa_attention(q, k, v, rh, rw, H, W), Fn.aa_attention_reference(q, k, v, rh, rw, H, W)
    assert torch.allclose(out, ref, atol=1e-5)
    ga = torch.autograd.grad(out.square().sum(), [q, rh])
    gb = torch.autograd.grad(ref.square().sum(), [q, rh])
    for a, b in zip(ga, gb):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dk,dv", [(20, 4), (20, 20), (3, 5), (16, 8)])
def test_padded_heads_are_a_multiple_of_8_and_exact(dk, dv):
    """The head size SDPA gets on CUDA (:data:`CUDA_HEAD_MULTIPLE`, the memory-efficient kernel's requirement in
    16-bit) is a multiple of 8, and padding to it changes neither the output (float32: within 1e-6) nor, in float64,
    the output and the gradients (within 1e-12: the padding adds exact zeros)."""
    torch.manual_seed(4)
    H, W = 4, 5
    for dtype, tol in ((torch.float32, 1e-6), (D, 1e-12)):
        q, k = (torch.randn(2, 2, H * W, dk, dtype=dtype, requires_grad=True) for _ in range(2))
        v = torch.randn(2, 2, H * W, dv, dtype=dtype, requires_grad=True)
        rh = torch.randn(2 * H - 1, dk, dtype=dtype, requires_grad=True)
        rw = torch.randn(2 * W - 1, dk, dtype=dtype, requires_grad=True)
        qp, kp, vp, _ = Fn._same_head_dim(q, k, v, Fn.CUDA_HEAD_MULTIPLE)
        assert qp.shape[-1] == kp.shape[-1] == vp.shape[-1] == 8 * -(-max(dk, dv) // 8)
        g = torch.randn(2, 2, H * W, dv, dtype=dtype)
        for rel in ((rh, rw, H, W), ()):
            plain = Fn.aa_attention(q, k, v, *rel, pad_to=1)
            padded = Fn.aa_attention(q, k, v, *rel, pad_to=Fn.CUDA_HEAD_MULTIPLE)
            assert padded.shape == plain.shape and (padded - plain).abs().max() <= tol
            if dtype is D:
                leaves = [q, k, v, *rel[:2]]
                for a, b in zip(torch.autograd.grad(plain, leaves, g), torch.autograd.grad(padded, leaves, g)):
                    assert (a - b).abs().max() <= tol


def test_padding_defaults_to_the_device():
    q = torch.randn(1, 1, 4, 20)
    assert Fn._same_head_dim(q, q, q)[0].shape[-1] == 20          # CPU: no more than the larger head size


# ---------------------------------------------------------------------------------------------- AW conv
@pytest.mark.parametrize("m", [1, 3, 4, 5, 6])   # 4 and 5 do not divide C_out = 6: the gather path
@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 0, 1), (1, 2, 2)])
def test_aw_conv2d_matches_loop(m, stride, padding, dilation):
    torch.manual_seed(0)
    B, C_in, C_out = 3, 4, 6
    x = torch.randn(B, C_in, 7, 9, dtype=D, requires_grad=True)
    w = torch.randn(C_out, C_in, 3, 3, dtype=D, requires_grad=True)
    a = torch.rand(B, m, C_in, 3, 3, dtype=D, requires_grad=True)
    b = torch.randn(C_out, dtype=D, requires_grad=True)
    out = Fn.aw_conv2d(x, w, a, b, stride, padding, dilation)
    ref = Fn.aw_conv2d_reference(x, w, a, b, stride, padding, dilation)
    _close(out, ref)
    g = torch.randn_like(out)
    for ga, gb in zip(torch.autograd.grad(out, [x, w, a, b], g), torch.autograd.grad(ref, [x, w, a, b], g)):
        _close(ga, gb)


def test_aw_conv2d_map_sharing_and_zero_attention():
    torch.manual_seed(0)
    x, w = torch.randn(2, 3, 5, 5, dtype=D), torch.randn(4, 3, 3, 3, dtype=D)
    # zero attention: a plain convolution
    _close(Fn.aw_conv2d(x, w, torch.zeros(2, 2, 3, 3, 3, dtype=D), padding=1), F.conv2d(x, w, padding=1))
    # m = 2, C_out = 4: channels 0, 1 use map 0 and channels 2, 3 use map 1
    a = torch.zeros(2, 2, 3, 3, 3, dtype=D)
    a[:, 1] = 1.0
    out = Fn.aw_conv2d(x, w, a, padding=1)
    _close(out[:, :2], F.conv2d(x, w[:2], padding=1))
    _close(out[:, 2:], 2 * F.conv2d(x, w[2:], padding=1))
    # per-sample: sample 1 doubled only
    a = torch.zeros(2, 1, 3, 3, 3, dtype=D)
    a[1] = 1.0
    out = Fn.aw_conv2d(x, w, a, padding=1)
    _close(out[0], F.conv2d(x[:1], w, padding=1)[0])
    _close(out[1], 2 * F.conv2d(x[1:], w, padding=1)[0])


@pytest.mark.parametrize("C_out,m,index", [
    (5, 2, [0, 0, 0, 1, 1]),             # o * m // C_out: maps serve consecutive blocks of output channels
    (5, 3, [0, 0, 1, 1, 2]),
    (7, 3, [0, 0, 0, 1, 1, 2, 2]),
    (6, 3, [0, 0, 1, 1, 2, 2]),
    (4, 4, [0, 1, 2, 3]),
])
@pytest.mark.parametrize("fn", [Fn.aw_conv2d, Fn.aw_conv2d_reference], ids=["fast", "reference"])
def test_aw_conv2d_output_channel_o_uses_map_o_m_div_c_out(fn, C_out, m, index):
    """Map j scaled by (j + 1): output channel o must come out scaled by (2 + index[o]), the index written out."""
    torch.manual_seed(0)
    x, w = torch.randn(2, 3, 5, 5, dtype=D), torch.randn(C_out, 3, 3, 3, dtype=D)
    a = torch.arange(1, m + 1, dtype=D).reshape(1, m, 1, 1, 1).expand(2, m, 3, 3, 3)
    out = fn(x, w, a, None, 1, 1)
    plain = F.conv2d(x, w, padding=1)
    for o, j in enumerate(index):
        _close(out[:, o], (2 + j) * plain[:, o])


def test_aw_conv2d_bad_shapes():
    with pytest.raises(ValueError, match=r"\(B, m, C_in, kh, kw\)"):
        Fn.aw_conv2d(torch.randn(2, 3, 5, 5), torch.randn(4, 3, 3, 3), torch.rand(2, 1, 4, 3, 3))


# ---------------------------------------------------------------------------------------------- channel split
@pytest.mark.parametrize("out,heads,want", [(16, 8, 2), (64, 8, 4), (256, 8, 8), (8, 8, 1), (160, 8, 8),
                                            (30, 6, 3)])
def test_attention_channels_narrow_rule(out, heads, want):
    h, dk, dv = Fn.attention_channels(out, heads, 0.1, 0.2)
    assert h == want and heads % h == 0
    assert dv % h == 0 and dk % h == 0 and 1 <= dv <= out and dk >= h
    assert dv == h * max(1, round(0.1 * out / h))
    assert dk == h * max(1, round(0.2 * out / h))


@pytest.mark.parametrize("out,heads,upsilon,kappa,want", [
    (40, 8, 0.2, 0.05, (2, 2, 8)),     # 8 value channels would take 8 heads, but only 2 key channels: 2 heads
    (64, 8, 0.25, 0.0625, (4, 4, 16)),
    (100, 4, 0.2, 0.01, (1, 1, 20)),
])
def test_kappa_limits_the_heads_without_the_key_rule(out, heads, upsilon, kappa, want):
    """kappa < upsilon: with min_key_dims=0 the key channels limit the heads (each head keeps a key channel)."""
    assert Fn.attention_channels(out, heads, upsilon, kappa, min_key_dims=0) == want
    h, dk, dv = Fn.attention_channels(out, heads, upsilon, kappa, min_key_dims=20)
    assert dv == want[2] and h > want[0] and dk == 20 * h    # with the rule, keys no longer limit the heads


@pytest.mark.parametrize("out,heads,min_key,want", [
    (256, 8, 20, (8, 160, 24)),     # the paper's WRN setting on a ResNet-50 stage-3 layer
    (128, 8, 20, (8, 160, 16)),     # stage 2 of AA-ResNet-50: d_k = 160 > F_out = 128
    (2048, 8, 20, (8, 408, 208)),   # kappa asks for more: round(0.2 * 2048 / 8) = 51 > 20
    (16, 8, 20, (2, 40, 2)),        # narrow CIFAR layer: 2 heads (value channels), 20 keys each
    (8, 8, 20, (1, 20, 1)),
    (256, 8, 0, (8, 48, 24)),       # 0: kappa alone
    (256, 8, 7, (8, 56, 24)),
])
def test_attention_channels_key_depth_rule(out, heads, min_key, want):
    assert Fn.attention_channels(out, heads, 0.1, 0.2, min_key) == want
    h, dk, dv = want
    assert dk == h * max(1, min_key, round(0.2 * out / h))


def test_attention_channels_key_rule_needs_keys_and_kappa_may_exceed_one():
    assert Fn.attention_channels(64, 8, 0.1, None, 20) == (4, 0, 8)     # no keys (ExpAtt): the rule is moot
    assert Fn.attention_channels(16, 2, 0.5, 2.0, 0) == (2, 32, 8)      # kappa = 2: d_k = 2 F_out


def test_attention_channels_bad():
    with pytest.raises(ValueError, match="heads=0"):
        Fn.attention_channels(16, 0, 0.1)
    with pytest.raises(ValueError, match=r"upsilon=1.5 .*\(0, 1\]"):
        Fn.attention_channels(16, 8, 1.5)
    with pytest.raises(ValueError, match="out_channels=0"):
        Fn.attention_channels(0, 8, 0.1)
    with pytest.raises(ValueError, match="kappa=0.0 .*> 0"):
        Fn.attention_channels(16, 8, 0.1, 0.0)
    with pytest.raises(ValueError, match="min_key_dims=-1 .*>= 0"):
        Fn.attention_channels(16, 8, 0.1, 0.2, -1)
    with pytest.raises(ValueError, match="min_key_dims=2.5"):
        Fn.attention_channels(16, 8, 0.1, 0.2, 2.5)


# ---------------------------------------------------------------------------------------------- devices, precision
def test_explicit_attention_low_precision_builds_maps_in_float32():
    torch.manual_seed(4)
    v = torch.randn(2, 2, 3, 6, 7)
    r = torch.tensor([1.37], requires_grad=True)
    for kernel in ("gaussian", "cauchy"):
        out = Fn.explicit_attention(v.bfloat16(), r, kernel)
        assert out.dtype == torch.bfloat16
        assert torch.allclose(out.float(), Fn.explicit_attention(v, r, kernel), atol=5e-2)
        (g,) = torch.autograd.grad(out.float().sum(), [r])
        assert g.dtype == torch.float32 and torch.isfinite(g).all()


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")  # tracer noise
def test_aa_attention_traces_as_plain_sdpa():
    H, W = 3, 4
    q, k, v = (torch.randn(1, 2, H * W, 2, requires_grad=True) for _ in range(3))
    rh, rw = torch.randn(2 * H - 1, 2, requires_grad=True), torch.randn(2 * W - 1, 2, requires_grad=True)
    traced = torch.jit.trace(lambda q, k, v, rh, rw: Fn.aa_attention(q, k, v, rh, rw, H, W), (q, k, v, rh, rw))
    assert "scaled_dot_product_attention" in str(traced.graph)
    assert torch.allclose(traced(q, k, v, rh, rw), Fn.aa_attention_reference(q, k, v, rh, rw, H, W), atol=1e-5)


@pytest.mark.cuda
def test_cuda_paths_match_references():
    torch.manual_seed(5)
    dev = "cuda"
    H, W = 7, 9
    q, k, v = (torch.randn(2, 4, H * W, 8, device=dev, requires_grad=True) for _ in range(3))
    rh = torch.randn(2 * H - 1, 8, device=dev, requires_grad=True)
    rw = torch.randn(2 * W - 1, 8, device=dev, requires_grad=True)
    out, ref = Fn.aa_attention(q, k, v, rh, rw, H, W), Fn.aa_attention_reference(q, k, v, rh, rw, H, W)
    assert torch.allclose(out, ref, atol=1e-4)
    for a, b in zip(torch.autograd.grad(out.square().sum(), [q, rh]), torch.autograd.grad(ref.square().sum(), [q, rh])):
        assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)
    ve = torch.randn(2, 4, 3, H, W, device=dev)
    r = torch.tensor([1.5], device=dev)
    for kernel in KERNELS:
        assert torch.allclose(Fn.explicit_attention(ve, r, kernel), Fn.explicit_attention_reference(ve, r, kernel),
                              atol=1e-5)
    x, w = torch.randn(4, 3, 8, 8, device=dev), torch.randn(6, 3, 3, 3, device=dev)
    a = torch.rand(4, 2, 3, 3, 3, device=dev)
    assert torch.allclose(Fn.aw_conv2d(x, w, a, padding=1), Fn.aw_conv2d_reference(x, w, a, padding=1), atol=1e-4)


# ---------------------------------------------------------------------------------------------- pooling
@pytest.mark.parametrize("H,W,size", [(7, 9, 3), (8, 8, 3), (5, 6, (2, 4)), (3, 3, 3), (6, 6, 1), (4, 5, 7)])
def test_adaptive_avg_pool2d_matmul_matches_the_op(H, W, size):
    """The deterministic form (two matrix products) has torch's bins: values and gradients agree in float64."""
    torch.manual_seed(6)
    x = torch.randn(2, 3, H, W, dtype=D, requires_grad=True)
    a, b = Fn.adaptive_avg_pool2d_matmul(x, size), F.adaptive_avg_pool2d(x, size)
    assert a.shape == b.shape and (a - b).abs().max() < 1e-12
    g = torch.randn_like(a)
    (ga,), (gb,) = torch.autograd.grad(a, [x], g), torch.autograd.grad(b, [x], g)
    assert (ga - gb).abs().max() < 1e-12


def test_adaptive_avg_pool2d_is_the_plain_op_on_cpu():
    x = torch.randn(2, 3, 7, 9)
    torch.use_deterministic_algorithms(True)
    try:
        assert torch.equal(Fn.adaptive_avg_pool2d(x, 3), F.adaptive_avg_pool2d(x, 3))   # bit for bit
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.cuda
def test_aw_trains_on_cuda_under_deterministic_algorithms():
    """adaptive_avg_pool2d's CUDA backward raises under torch.use_deterministic_algorithms; AW's pooling then
    takes the matmul form, with the same result."""
    from attnrepro.modules import AWConv2d
    torch.manual_seed(7)
    layer = AWConv2d(8, 16).cuda()
    x = torch.randn(4, 8, 9, 9, device="cuda", requires_grad=True)
    ref = layer(x)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), [x])
    torch.use_deterministic_algorithms(True)
    try:
        out = layer(x)
        (g,) = torch.autograd.grad(out.square().sum(), [x])
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.allclose(out, ref, atol=1e-4) and torch.allclose(g, g_ref, atol=1e-3, rtol=1e-3)
