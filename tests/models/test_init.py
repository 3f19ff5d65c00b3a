"""Layers placed into a backbone start with the backbone's initialisation rule (attnrepro.models.init)."""
import math

import pytest
import torch
import torch.nn as nn

from attnrepro.models import build_model, init_backbone
from attnrepro.models.init import CONV_TYPES
from attnrepro.modules import AAConv2d, AWConv2d, CBAM, ExpAttConv2d, SqueezeExcite

CONV_PARTS = ("expatt", "aa", "aw", "aw+se", "aw+cbam", "aa+se", "expatt+cbam")
# (model, path of a replaced conv, seeds): a large layer in ResNet-50 (256 x 256 x 3 x 3), a small one in ResNet-20
LAYERS = [("resnet50", lambda m: m.layer3[1].conv2, (0,)),
          ("resnet20", lambda m: m.layer2[1].conv1, (0, 1, 2))]


def conv_part_weight(layer):
    return layer.weight if isinstance(layer, AWConv2d) else layer.conv.weight


def he_std(w: torch.Tensor) -> float:
    """kaiming_normal_(mode="fan_out", nonlinearity="relu"): std sqrt(2 / (C_out * k * k))."""
    return math.sqrt(2.0 / (w.shape[0] * w[0, 0].numel()))


@pytest.mark.parametrize("name, path, seeds", LAYERS, ids=[n for n, _, _ in LAYERS])
@pytest.mark.parametrize("kind", CONV_PARTS)
def test_replaced_conv_starts_with_the_plain_layers_std(name, path, seeds, kind):
    """The conv part of the replacing layer against the plain model's conv at the same place: within 10%."""
    ratios = []
    for seed in seeds:
        torch.manual_seed(seed)
        plain = path(build_model(name, 10)).weight.std().item()
        torch.manual_seed(seed)
        w = conv_part_weight(path(build_model(name, 10, attention=kind)))
        ratios.append(w.std().item() / plain)
        # the rule for its own shape (the conv part has F_out - d_v filters, so a slightly larger std)
        assert w.std().item() == pytest.approx(he_std(w), rel=0.06)
    assert sum(ratios) / len(ratios) == pytest.approx(1.0, rel=0.10), ratios


@pytest.mark.parametrize("name, kw", [("resnet50", {}), ("wrn28_10", {"width": 0.5})], ids=["resnet50", "wrn"])
@pytest.mark.parametrize("kind", CONV_PARTS + ("se", "cbam"))
def test_every_conv_placement_creates_follows_the_rule(kind, name, kw):
    """qkv, value, proj, AW's point-wise convs, the gates' MLPs: He-normal fan_out weights and zero biases, except
    what a module declares (CBAM's spatial conv starts at zero). AA's relative tables keep their N(0, 1/dkh).
    ResNet-50's gates go after a BN (``bn3``), the WRN's into the block's gate slot."""
    torch.manual_seed(0)
    model = build_model(name, 10, attention=kind, stages=[3], **kw)
    placed = [m for m in model.modules() if isinstance(m, (ExpAttConv2d, AAConv2d, AWConv2d, SqueezeExcite, CBAM))]
    assert placed
    checked = 0
    for layer in placed:
        for n, m in layer.named_modules():
            if not isinstance(m, CONV_TYPES):
                continue
            if isinstance(layer, CBAM) and n == "spatial":
                assert torch.all(m.weight == 0) and torch.all(m.bias == 0)
                continue
            if getattr(m, "bias", None) is not None:
                assert torch.all(m.bias == 0), (type(layer).__name__, n)
            if m.weight.numel() >= 2000:    # enough weights for a sample std within a few percent
                assert m.weight.std().item() == pytest.approx(he_std(m.weight), rel=0.1), (type(layer).__name__, n)
                checked += 1
        if isinstance(layer, AAConv2d):
            assert layer.rel_h.std().item() == pytest.approx(layer.dkh ** -0.5, rel=0.25)
    assert checked >= len(placed)


def test_the_rule_is_torchvisions_and_the_cifar_nets():
    """One rule for every backbone: torchvision's own init (its ResNet constructor) and the CIFAR nets give every
    conv He-normal fan_out weights and every BN weight 1, bias 0; a replaced stem gets it too."""
    torch.manual_seed(0)
    for model in (build_model("resnet50", 10), build_model("resnet18", 10, in_chans=1),
                  build_model("resnet56", 10), build_model("wrn28_10", 10, width=0.5)):
        for n, m in model.named_modules():
            if isinstance(m, nn.Conv2d) and m.weight.numel() >= 2000:
                assert m.weight.std().item() == pytest.approx(he_std(m.weight), rel=0.1), n
            elif isinstance(m, nn.BatchNorm2d):
                assert torch.all(m.weight == 1) and torch.all(m.bias == 0), n


def test_init_backbone_skips_declared_submodules_and_keeps_the_seed():
    class Gate(nn.Module):
        init_exempt = ("last",)

        def __init__(self):
            super().__init__()
            self.first, self.last = nn.Conv2d(64, 64, 3), nn.Conv2d(64, 64, 3)
            nn.init.zeros_(self.last.weight)

    g = init_backbone(Gate())
    assert torch.all(g.last.weight == 0) and torch.all(g.first.bias == 0)
    assert g.first.weight.std().item() == pytest.approx(he_std(g.first.weight), rel=0.05)
    torch.manual_seed(3)
    a = init_backbone(Gate()).first.weight
    torch.manual_seed(3)
    assert torch.equal(a, init_backbone(Gate()).first.weight)
