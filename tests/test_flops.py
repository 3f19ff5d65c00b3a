"""attnrepro.flops: every op that multiplies is counted, against hand counts; no-MAC ops are ignored by name."""
import logging

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from attnrepro.flops import (NO_MAC_OPS, complexity, count_macs, count_params, einsum_macs, flop_analysis,
                             matmul_macs, sdpa_macs)


class Fn(nn.Module):
    """Wrap a function of the input as a module (fvcore traces modules)."""

    def __init__(self, fn, *params):
        super().__init__()
        self.fn = fn
        self.params = nn.ParameterList(params)

    def forward(self, x):
        return self.fn(x, *self.params)


def analyse(model, x):
    model.eval()
    with torch.no_grad():
        fa = flop_analysis(model, x)
        total = fa.total()
        return total, fa.unsupported_ops()


def test_plain_conv_against_hand_count():
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=True)
    # output 5x5 (ceil(10 / 2)); bias additions are not multiply-adds
    assert count_macs(conv, (1, 3, 10, 10)) == 8 * 3 * 3 * 3 * 5 * 5
    assert count_macs(conv, (4, 3, 10, 10)) == 4 * 8 * 3 * 3 * 3 * 5 * 5


def test_grouped_per_sample_conv_against_hand_count():
    # AW-style: B samples with their own kernels, batch folded into the groups
    B, C, O, k, H = 3, 4, 6, 3, 7
    w = torch.randn(B * O, C, k, k)

    def fn(x, w):
        y = F.conv2d(x.reshape(1, B * C, H, H), w, padding=1, groups=B)
        return y.reshape(B, O, H, H)

    total, unsupported = analyse(Fn(fn, nn.Parameter(w)), torch.randn(B, C, H, H))
    assert total == B * O * C * k * k * H * H
    assert not unsupported
    # depthwise: each output channel sees one input channel
    dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    assert count_macs(dw, (1, 8, 5, 5)) == 8 * 9 * 25


def test_matmul_with_broadcast_first_operand():
    # the factorised Gaussian does (H, H) @ (B, heads, d, H, W); fvcore's default handle counts H*H*W only
    a = torch.randn(5, 5)
    total, unsupported = analyse(Fn(lambda x, a: torch.matmul(a, x), nn.Parameter(a)), torch.randn(2, 3, 5, 7))
    assert total == 2 * 3 * 5 * 5 * 7
    assert matmul_macs((5, 5), (2, 3, 5, 7)) == 2 * 3 * 5 * 5 * 7
    assert matmul_macs((2, 1, 4, 6), (3, 6, 2)) == 2 * 3 * 4 * 6 * 2
    assert matmul_macs((6,), (6, 2)) == 12 and matmul_macs((3, 6), (6,)) == 18
    total, _ = analyse(Fn(lambda x: torch.bmm(x, x.transpose(1, 2))), torch.randn(2, 3, 4))
    assert total == 2 * 3 * 4 * 3


@pytest.mark.parametrize("eq, shapes, expect", [
    ("bhld,bhmd->bhlm", [(2, 4, 9, 5), (2, 4, 9, 5)], 2 * 4 * 9 * 9 * 5),
    ("bhxyd,wd->bhxyw", [(2, 4, 3, 3, 5), (5, 5)], 2 * 4 * 3 * 3 * 5 * 5),
    ("...ld,...md->...lm", [(2, 4, 9, 5), (4, 9, 5)], 2 * 4 * 9 * 9 * 5),
    ("bi,bj->bij", [(3, 4), (3, 5)], 3 * 4 * 5),
    ("bii->b", [(3, 4, 4)], 0),
])
def test_einsum_against_hand_count(eq, shapes, expect):
    assert einsum_macs(eq, shapes) == expect


def test_einsum_traced():
    def fn(x):
        return torch.einsum("bhld,bhmd->bhlm", x, x)
    total, unsupported = analyse(Fn(fn), torch.randn(2, 4, 9, 5))
    assert total == 2 * 4 * 9 * 9 * 5 and not unsupported


@pytest.mark.parametrize("masked", [False, True])
def test_sdpa_against_hand_count(masked):
    B, h, L, d, dv = 2, 4, 16, 8, 6
    mask = torch.randn(1, h, L, L) if masked else None

    def fn(x):
        q = x[..., :d]
        v = x[..., d:d + dv]
        return F.scaled_dot_product_attention(q, q, v, attn_mask=mask)

    total, unsupported = analyse(Fn(fn), torch.randn(B, h, L, d + dv))
    assert total == B * h * L * L * (d + dv) == sdpa_macs((B, h, L, d), (B, h, L, d), (B, h, L, dv))
    assert not unsupported


def test_elementwise_products_counted_no_mac_ops_ignored():
    def fn(x):
        g = torch.sigmoid(x.mean((2, 3), keepdim=True))
        y = x * g  # a gate: one multiply per output element
        return torch.softmax(y, -1) + x - 1

    total, unsupported = analyse(Fn(fn), torch.randn(2, 3, 4, 5))
    assert total == 2 * 3 * 4 * 5
    assert not unsupported
    for op in ("aten::softmax", "aten::add", "aten::sigmoid", "aten::mean"):
        assert op in NO_MAC_OPS


def test_unknown_ops_still_warn(caplog):
    def fn(x):
        return torch.special.erfcx(x)

    with caplog.at_level(logging.WARNING):
        _, unsupported = analyse(Fn(fn), torch.randn(2, 3))
    assert "aten::special_erfcx" in unsupported


def test_count_macs_in_eval_mode_and_restores_training():
    model = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4), nn.Dropout(0.5))
    model.train()
    macs = count_macs(model, (1, 3, 4, 4))
    # 1x1 conv 3*4*16, eval BN with affine: fvcore counts 2 per element
    assert macs == 3 * 4 * 16 + 2 * 4 * 16
    assert model.training and all(m.training for m in model)


def test_resnet50_plain_about_4_1_gmacs():
    from attnrepro.models import build_model
    model = build_model("resnet50", 1000)
    c = complexity(model, (1, 3, 224, 224))
    assert c["params"] == count_params(model) == 25_557_032
    assert 4.05e9 < c["macs"] < 4.15e9
    assert c["gflops_aa"] == pytest.approx(2 * c["macs"] / 1e9)
    # the AA paper's ResNet-50: 8.2 GFLOPs in its convention
    assert abs(c["gflops_aa"] - 8.2) < 0.1


# ------------------------------------------------------------------------------------------ attention layers
pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def layer_macs(layer, shape):
    total, unsupported = analyse(layer, torch.randn(*shape))
    assert not unsupported, unsupported
    return total


def test_expatt_gaussian_against_hand_count():
    from attnrepro.modules import ExpAttConv2d
    layer = ExpAttConv2d(16, 32, 3, heads=4, upsilon=0.25)
    assert (layer.heads, layer.dv) == (4, 8)
    H, W, L = 6, 7, 42
    conv = 16 * (32 - 8) * 9 * L
    value = 16 * 8 * L
    gauss = 8 * H * H * W + 8 * H * W * W  # G_y V then (.) G_x^T, over all 8 value channels
    proj = 8 * 8 * L
    main = conv + value + gauss + proj
    total = layer_macs(layer, (1, 16, H, W))
    # plus the H x H and W x W kernel matrices (squared offsets, division by 2 r^2): O(H^2 + W^2)
    assert main <= total <= main + 4 * (H * H + W * W) + 10


def test_expatt_dense_kernel_counts_the_dense_map():
    from attnrepro.modules import ExpAttConv2d
    layer = ExpAttConv2d(16, 32, 3, heads=4, upsilon=0.25, kernel="cauchy")
    L = 6 * 7
    total = layer_macs(layer, (1, 16, 6, 7))
    dense = 8 * L * L  # (1, HW, HW) map applied to 8 value channels
    assert total >= 16 * 24 * 9 * L + 16 * 8 * L + dense + 8 * 8 * L


@pytest.mark.parametrize("relative", [True, False])
@pytest.mark.parametrize("min_key_dims, dk", [(0, 8), (20, 80)])   # kappa alone; the paper's 20 keys per head
def test_aa_against_hand_count(relative, min_key_dims, dk):
    from attnrepro.modules import AAConv2d
    layer = AAConv2d(16, 32, 3, heads=4, kappa=0.25, upsilon=0.25, relative=relative, max_size=8,
                     min_key_dims=min_key_dims)
    assert (layer.heads, layer.dk, layer.dv) == (4, dk, 8)
    H, W, L, dkh, dvh = 6, 7, 42, dk // 4, 2
    expect = (16 * 24 * 9 * L           # conv part
              + 16 * (dk + dk + 8) * L  # qkv 1x1
              + dk * L                  # query scaling
              + 4 * L * L * (dkh + dvh)  # SDPA: Q K^T and A V
              + 8 * 8 * L)              # output projection
    if relative:
        expect += 4 * L * dkh * (2 * W - 1) + 4 * L * dkh * (2 * H - 1)  # q . r^W, q . r^H before rel-to-abs
    assert layer_macs(layer, (1, 16, H, W)) == expect


def test_aa_training_path_counts_the_same():
    from attnrepro.modules import AAConv2d
    layer = AAConv2d(16, 32, 3, heads=4, kappa=0.25, upsilon=0.25, max_size=8).eval()
    x = torch.randn(1, 16, 6, 7)
    with torch.no_grad():
        a = flop_analysis(layer, x).total()
    fa = flop_analysis(layer, x)  # gradients on: the CPU autograd function is traced
    assert fa.total() == a and not fa.unsupported_ops()


def test_aw_against_hand_count():
    from attnrepro.modules import AWConv2d
    layer = AWConv2d(8, 16, 3, reduction=16, maps=4)
    B, H = 2, 6
    expect = B * (8 * H * H           # adaptive average pool to 3x3 (fvcore: one per input element)
                  + 8 * 8 * 9         # pw1 at the 3x3 pooled positions (hidden max(8 // 16, 8) = 8)
                  + 8 * 4 * 8 * 9     # pw2 -> m * C_in maps
                  + 16 * 8 * 9        # kernel modulation weight * (1 + A), per sample
                  + 16 * 8 * 9 * H * H)  # the per-sample grouped conv
    assert layer_macs(layer, (B, 8, H, H)) == expect


def test_gates_against_hand_count():
    from attnrepro.modules import CBAM, SqueezeExcite
    C, hid, HW = 16, 4, 25
    assert layer_macs(SqueezeExcite(C, reduction=4), (1, C, 5, 5)) == 2 * C * hid + C * HW
    assert layer_macs(CBAM(C, reduction=4), (1, C, 5, 5)) == \
        2 * (2 * C * hid) + C * HW + 2 * 49 * HW + C * HW  # MLP on avg and max, channel gate, 7x7 conv, gate


@pytest.mark.parametrize("kind, kw", [(None, {}), ("expatt", {}), ("expatt", {"kernel": "laplacian"}),
                                      ("expatt", {"kernel": "uniform"}), ("aa", {}), ("aw", {}), ("se", {}),
                                      ("cbam", {})])
def test_models_have_no_unsupported_ops(kind, kw):
    from attnrepro.models import build_model
    model = build_model("resnet20", 10, attention=kind, input_size=16, **kw)
    total, unsupported = analyse(model, torch.randn(1, 3, 16, 16))
    assert not unsupported and total > 0


def test_complexity_table():
    from attnrepro.flops import complexity_table
    from attnrepro.models import build_model
    df = complexity_table(["resnet20"], ["none", "se", "aa"], 16, heads=2)
    assert list(df.columns) == ["model", "attention", "stages", "input_size", "params", "macs", "gmacs",
                                "gflops_aa"]
    assert list(df["attention"]) == ["none", "se", "aa"] and list(df["stages"]) == ["-", "1,2,3", "1,2,3"]
    assert set(df["input_size"]) == {16}
    assert (df["gflops_aa"] == 2 * df["gmacs"]).all() and (df["gmacs"] == df["macs"] / 1e9).all()
    aa = build_model("resnet20", 1000, attention="aa", heads=2, input_size=16)
    assert df.loc[2, "params"] == count_params(aa)
    assert df.loc[2, "macs"] == count_macs(aa, (1, 3, 16, 16)) > df.loc[0, "macs"]


def test_count_does_not_depend_on_what_ran_before():
    from attnrepro.models import build_model
    model = build_model("resnet20", 10, attention="expatt", kernel="laplacian", input_size=16)
    first = count_macs(model, (1, 3, 16, 16))
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 16, 16))
    assert count_macs(model, (1, 3, 16, 16)) == first


def test_integer_products_are_not_model_compute():
    def fn(x):
        idx = torch.arange(12).reshape(3, 4) * 2       # integer index arithmetic: 0
        return x * 3.0 + idx.float().sum()              # one float product per element: 2*3*4*5

    total, unsupported = analyse(Fn(fn), torch.randn(2, 3, 4, 5))
    assert total == 2 * 3 * 4 * 5 and not unsupported


def test_input_size_forms():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    one = 8 * 3 * 9 * 10 * 10
    assert count_macs(conv, 10) == count_macs(conv, (3, 10, 10)) == count_macs(conv, (1, 3, 10, 10)) == one
    assert count_macs(conv, (2, 3, 10, 10)) == 2 * one
    for bad in ((3, 10), (1, 3, 0, 10), True):
        with pytest.raises(ValueError, match="input_size"):
            count_macs(conv, bad)


def test_breakdown_sums_to_the_count_and_names_the_attention_matmuls():
    from attnrepro.flops import ATTENTION_MATMUL_OPS, mac_breakdown
    from attnrepro.models import build_model
    from attnrepro.modules import AAConv2d
    plain = build_model("resnet20", 10, input_size=16)
    b = mac_breakdown(plain, (1, 3, 16, 16))
    assert sum(b[""].values()) == count_macs(plain, (1, 3, 16, 16))
    assert sum(b["layer1"].values()) + sum(b["layer2"].values()) + sum(b["layer3"].values()) < sum(b[""].values())
    assert not set(b[""]) & set(ATTENTION_MATMUL_OPS)              # a plain net multiplies no activations together
    layer = AAConv2d(16, 32, 3, heads=4, kappa=0.25, upsilon=0.25, max_size=8, min_key_dims=0)
    ops = mac_breakdown(layer, (1, 16, 6, 7))[""]
    H, W, L, dkh, dvh = 6, 7, 42, 2, 2
    attention = 4 * L * L * (dkh + dvh) + 4 * L * dkh * (2 * W - 1) + 4 * L * dkh * (2 * H - 1)
    assert sum(v for op, v in ops.items() if op in ATTENTION_MATMUL_OPS) == attention
    assert mac_breakdown(layer, (1, 16, 6, 7), warmup=False) == mac_breakdown(layer, (1, 16, 6, 7))
