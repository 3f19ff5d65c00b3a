"""Every model name runs forward and backward on CPU with every attention kind (tiny inputs)."""
import pytest
import torch

from attnrepro.models import MODEL_NAMES, build_model

KINDS = (None, "expatt", "aa", "aw", "se", "cbam")
COMBOS = ("aw+se", "aw+cbam")

# tiny inputs: CIFAR nets at 16x16, ImageNet nets at 32x32 (stage sides 8, 4, 2, 1)
SIZE = {name: 32 if name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152") else 16
        for name in MODEL_NAMES}
# the deepest nets with the two self-attention kinds only (the ExpAtt paper's comparison), to keep the suite fast:
# their blocks are resnet50's, which runs every kind, and their plain form is torchvision's own
CASES = [(name, kind) for name in MODEL_NAMES for kind in KINDS
         if name not in ("resnet101", "resnet152") or kind in ("expatt", "aa")]
# AW on top of a gate: one net of each block type (bottleneck, basic, CIFAR basic, pre-activation wide)
CASES += [(name, kind) for name in ("resnet50", "resnet18", "resnet20", "wrn28_10") for kind in COMBOS]


def forward_backward(model, x):
    out = model(x)
    assert out.shape == (x.shape[0], model.fc.out_features)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name, kind", CASES, ids=[f"{n}-{k or 'none'}" for n, k in CASES])
def test_forward_backward(name, kind):
    torch.manual_seed(0)
    size = SIZE[name]
    width = 0.1 if name == "wrn28_10" else 1.0  # WRN-28-1 shape, WRN blocks all the same
    model = build_model(name, 5, attention=kind, input_size=size, width=width)
    model.train()
    forward_backward(model, torch.randn(2, 3, size, size))


def layer_params(kind: str, c_in: int, f: int, side: int, dk: int, dv: int, heads: int = 8) -> int:
    """Parameters of one attention layer replacing a bias-free 3x3 conv, counted by hand from the definitions:
    conv part (F - d_v filters), then expatt: value 1x1 (no bias), proj 1x1 with bias, one radius; aa: qkv 1x1
    with bias, proj 1x1 with bias, two relative tables of (2 side - 1) x d_k / heads."""
    n = (f - dv) * c_in * 9 + dv * dv + dv
    if kind == "expatt":
        return n + c_in * dv + 1
    return n + c_in * (2 * dk + dv) + (2 * dk + dv) + 2 * (2 * side - 1) * (dk // heads)


@pytest.mark.parametrize("kind", ["expatt", "aa"])
def test_full_width_wrn_parameters_by_hand(kind):
    """AA-/ExpAtt-WRN-28-10 (CIFAR-100): every block's conv1 replaced; exact count. Depths by hand, 8 heads:
    d_v = 16, 32, 64 (upsilon 0.1) and, for AA, d_k = 8 x max(20, round(0.2 F / 8)) = 160 in every stage."""
    model = build_model("wrn28_10", 100, attention=kind)
    assert sum(type(m).__name__ in ("ExpAttConv2d", "AAConv2d") for m in model.modules()) == 12
    plain = sum(p.numel() for p in build_model("wrn28_10", 100).parameters())
    want = plain
    c_in = 16
    for f, side, dv in ((160, 32, 16), (320, 16, 32), (640, 8, 64)):
        for _ in range(4):
            want += layer_params(kind, c_in, f, side, 160, dv) - f * c_in * 9
            c_in = f
    assert sum(p.numel() for p in model.parameters()) == want


def test_fashion_mnist_shape_every_kind():
    x = torch.randn(2, 1, 28, 28)
    for kind in KINDS + COMBOS:
        model = build_model("resnet20", 10, in_chans=1, attention=kind, input_size=28)
        forward_backward(model, x)


EXPATT_VARIANTS = [dict(kernel=k) for k in ("gaussian", "laplacian", "cauchy", "uniform")] + [
    dict(kernel="uniform", radius_per_head=True), dict(kernel="cauchy", radius_per_head=True),
    dict(kernel="laplacian", learn_radius=False)]


@pytest.mark.parametrize("kw", EXPATT_VARIANTS, ids=lambda kw: "-".join(f"{v}" for v in kw.values()))
def test_every_parameter_of_every_expatt_kernel_gets_a_gradient(kw):
    """DDP fails at its second step on a parameter that gets no gradient ("Expected to have finished reduction in
    the prior iteration"): the uniform kernel's radius, which it ignores, must not be one."""
    torch.manual_seed(0)
    model = build_model("resnet20", 5, attention="expatt", input_size=16, width=0.5, **kw)
    forward_backward(model, torch.randn(2, 3, 16, 16))
