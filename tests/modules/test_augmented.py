"""AAConv2d against a brute-force per-head loop of the whole layer; tables, sizes, strides."""
import pytest
import torch
import torch.nn.functional as F

from attnrepro.modules import AAConv2d

D = torch.float64


def brute_force_aa(layer: AAConv2d, x: torch.Tensor) -> torch.Tensor:
    """The paper's layer written out: per head, explicit logits by positions, softmax, weighted sum; tables indexed
    by offset from their centre (independent of the layer's slicing)."""
    xa = F.avg_pool2d(x, layer.stride) if layer.stride > 1 else x
    B, _, H, W = xa.shape
    dk, dv, nh = layer.dk, layer.dv, layer.heads
    dkh, dvh = dk // nh, dv // nh
    qkv = F.conv2d(xa, layer.qkv.weight, layer.qkv.bias).flatten(2)
    ys = [p // W for p in range(H * W)]
    xs = [p % W for p in range(H * W)]
    c = layer.max_size - 1
    heads_out = []
    for h in range(nh):
        q = qkv[:, h * dkh:(h + 1) * dkh] * dkh ** -0.5                 # (B, dkh, L)
        k = qkv[:, dk + h * dkh:dk + (h + 1) * dkh]
        v = qkv[:, 2 * dk + h * dvh:2 * dk + (h + 1) * dvh]
        logits = torch.einsum("bci,bcj->bij", q, k)
        if layer.relative:
            rel = torch.zeros_like(logits)
            for i in range(H * W):
                for j in range(H * W):
                    e = layer.rel_w[c + xs[j] - xs[i]] + layer.rel_h[c + ys[j] - ys[i]]
                    rel[:, i, j] = q[:, :, i] @ e
            logits = logits + rel
        a = torch.softmax(logits, dim=-1)
        heads_out.append(torch.einsum("bij,bcj->bci", a, v))            # (B, dvh, L)
    o = torch.cat(heads_out, dim=1).reshape(B, dv, H, W)
    o = F.conv2d(o, layer.proj.weight, layer.proj.bias)
    conv = F.conv2d(x, layer.conv.weight, None, layer.stride, layer.kernel_size // 2)
    return torch.cat([conv, o], dim=1)


@pytest.mark.parametrize("relative", [True, False])
@pytest.mark.parametrize("grad", [True, False])
def test_layer_matches_brute_force_with_several_value_channels_per_head(relative, grad):
    torch.manual_seed(0)
    layer = AAConv2d(6, 40, heads=4, kappa=0.4, upsilon=0.4, min_key_dims=0, relative=relative, max_size=9).double()
    assert layer.heads == 4 and layer.dv == 16 and layer.dk == 16  # d_v / heads = 4 > 1
    x = torch.randn(2, 6, 5, 7, dtype=D)
    with torch.set_grad_enabled(grad):
        out = layer(x)
    ref = brute_force_aa(layer, x)
    assert out.shape == (2, 40, 5, 7)
    assert torch.allclose(out, ref, atol=1e-10)


def test_gradients_match_brute_force_and_tables_learn():
    torch.manual_seed(1)
    layer = AAConv2d(4, 20, heads=2, kappa=0.4, upsilon=0.4, min_key_dims=0, max_size=6).double()
    x = torch.randn(2, 4, 4, 5, dtype=D, requires_grad=True)
    g = torch.randn(2, 20, 4, 5, dtype=D)
    params = [x] + list(layer.parameters())
    ga = torch.autograd.grad(layer(x), params, g)
    gb = torch.autograd.grad(brute_force_aa(layer, x), params, g)
    for a, b in zip(ga, gb):
        assert torch.allclose(a, b, atol=1e-9)
    names = [n for n, _ in layer.named_parameters()]
    assert "rel_h" in names and "rel_w" in names
    grads = dict(zip(names, ga[1:]))
    c = layer.max_size - 1
    # the rows an H x W input uses get gradient; the others get none
    assert grads["rel_h"][c - 3:c + 4].abs().sum() > 0 and grads["rel_w"][c - 4:c + 5].abs().sum() > 0
    assert torch.all(grads["rel_h"][:c - 3] == 0) and torch.all(grads["rel_h"][c + 4:] == 0)


def test_tables_change_after_a_gradient_step():
    torch.manual_seed(2)
    layer = AAConv2d(8, 32, heads=2, max_size=8)
    before = layer.rel_w.detach().clone()
    layer(torch.randn(2, 8, 8, 8)).square().mean().backward()
    with torch.no_grad():
        for p in layer.parameters():
            p.sub_(0.1 * p.grad)
    assert not torch.equal(before, layer.rel_w.detach())


def test_layer_built_for_16_runs_on_8_and_rejects_larger():
    torch.manual_seed(3)
    layer = AAConv2d(4, 20, heads=2, kappa=0.4, upsilon=0.4, max_size=16).double()
    assert layer.rel_h.shape == (31, layer.dkh) and layer.rel_w.shape == (31, layer.dkh)
    x = torch.randn(1, 4, 8, 8, dtype=D)
    assert torch.allclose(layer(x), brute_force_aa(layer, x), atol=1e-10)
    with pytest.raises(ValueError, match=r"17x8 .*max_size=16"):
        layer(torch.randn(1, 4, 17, 8, dtype=D))
    layer_norel = AAConv2d(4, 20, heads=2, relative=False, max_size=16)
    with pytest.raises(ValueError, match="max_size=16"):
        layer_norel(torch.randn(1, 4, 8, 20))


def test_stride_two_attends_on_pooled_input():
    torch.manual_seed(4)
    layer = AAConv2d(4, 20, stride=2, heads=2, kappa=0.4, upsilon=0.4, max_size=8).double()
    x = torch.randn(2, 4, 8, 10, dtype=D)
    out = layer(x)
    assert out.shape == (2, 20, 4, 5)
    assert torch.allclose(out, brute_force_aa(layer, x), atol=1e-10)
    # odd input: the conv gives ceil(H / 2) and so does the attention part
    assert layer(torch.randn(1, 4, 7, 9, dtype=D)).shape == (1, 20, 4, 5)


def test_narrow_layer_reduces_heads():
    layer = AAConv2d(16, 16)  # CIFAR ResNet width: 8 heads do not fit 2 value channels
    # the paper's 20 key channels per head even here: d_k = 40 > F_out = 16
    assert (layer.heads, layer.dk, layer.dv, layer.dkh) == (2, 40, 2, 20)
    assert layer(torch.randn(2, 16, 8, 8)).shape == (2, 16, 8, 8)
    assert (AAConv2d(16, 16, min_key_dims=0).heads, AAConv2d(16, 16, min_key_dims=0).dk) == (2, 4)


@pytest.mark.parametrize("stride", [1, 2])
def test_more_key_channels_than_outputs_matches_brute_force(stride):
    """The key-depth rule gives d_k > F_out on narrow layers (stage 2 of the paper's ResNet-50 too)."""
    torch.manual_seed(5)
    layer = AAConv2d(6, 12, stride=stride, heads=2, kappa=0.2, upsilon=0.5, min_key_dims=8, max_size=6).double()
    assert (layer.heads, layer.dk, layer.dv) == (2, 16, 6) and layer.dk > layer.out_channels
    assert layer.qkv.out_channels == 2 * 16 + 6 and layer.rel_h.shape == (11, 8)
    x = torch.randn(2, 6, 6, 6, dtype=D, requires_grad=True)
    out, ref = layer(x), brute_force_aa(layer, x)
    assert torch.allclose(out, ref, atol=1e-10)
    params = [x] + list(layer.parameters())
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        assert torch.allclose(a, b, atol=1e-9)


def test_defaults_and_bad_args():
    layer = AAConv2d(64, 256)
    # the paper's WRN setting: 8 heads, kappa 0.2, upsilon 0.1, at least 20 key channels per head
    assert (layer.heads, layer.dk, layer.dv, layer.dkh) == (8, 160, 24, 20)
    assert layer.conv.out_channels == 232 and layer.conv.bias is None
    assert layer.proj.in_channels == layer.proj.out_channels == 24
    assert layer.qkv.out_channels == 2 * 160 + 24
    assert AAConv2d(64, 1024).dk == 8 * 26    # kappa asks for more than 20 per head: round(0.2 * 1024 / 8) = 26
    assert AAConv2d(64, 256, min_key_dims=0).dk == 48
    with pytest.raises(ValueError, match="max_size=0"):
        AAConv2d(8, 16, max_size=0)
    with pytest.raises(ValueError, match="kappa"):
        AAConv2d(8, 16, kappa=0.0)
    with pytest.raises(ValueError, match="heads=0"):
        AAConv2d(8, 16, heads=0)
    with pytest.raises(ValueError, match="min_key_dims=-1"):
        AAConv2d(8, 16, min_key_dims=-1)
