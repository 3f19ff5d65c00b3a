"""Backbones: torchvision parity, CIFAR ResNet / WRN shapes and parameter counts, argument checking."""
import pytest
import torch
import torch.nn as nn
import torchvision

from attnrepro.config import RunConfig
from attnrepro.models import (CIFAR_NAMES, IMAGENET_NAMES, MODEL_NAMES, build_model, model_from_config,
                              stage_sides)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_model_names_match_run_config():
    from attnrepro.config import MODELS
    from attnrepro.config import num_stages as config_num_stages
    from attnrepro.models import num_stages
    assert tuple(MODEL_NAMES) == tuple(MODELS)
    assert [config_num_stages(n) for n in MODELS] == [num_stages(n) for n in MODEL_NAMES]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
@pytest.mark.parametrize("num_classes", [1000, 10])
def test_plain_imagenet_resnet_is_torchvisions(name, num_classes):
    ours = build_model(name, num_classes)
    ref = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    assert n_params(ours) == n_params(ref)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert type(ours) is type(ref)


def test_in_chans_replaces_only_the_stem():
    ref = build_model("resnet18", 10)
    one = build_model("resnet18", 10, in_chans=1)
    assert one.conv1.weight.shape == (64, 1, 7, 7)
    assert n_params(ref) - n_params(one) == 64 * 2 * 7 * 7
    diff = {k for k, v in one.state_dict().items() if v.shape != ref.state_dict()[k].shape}
    assert diff == {"conv1.weight"}
    assert one(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def cifar_resnet_params(depth: int, classes: int, w=(16, 32, 64), in_chans=3) -> int:
    """Hand count: 3x3 convs without bias, BN (2 per channel), option-A shortcuts (no parameters)."""
    n = (depth - 2) // 6
    total = in_chans * w[0] * 9 + 2 * w[0]
    c_in = w[0]
    for c in w:
        for _ in range(n):
            total += c_in * c * 9 + c * c * 9 + 4 * c
            c_in = c
    return total + c_in * classes + classes


def wrn_params(depth: int, k: int, classes: int) -> int:
    n = (depth - 4) // 6
    w = (16 * k, 32 * k, 64 * k)
    total, c_in = 3 * 16 * 9, 16
    for c in w:
        for j in range(n):
            total += 2 * c_in + c_in * c * 9 + 2 * c + c * c * 9  # bn1, conv1, bn2, conv2
            if j == 0 and c_in != c:
                total += c_in * c  # 1x1 shortcut
            c_in = c
    return total + 2 * c_in + c_in * classes + classes


@pytest.mark.parametrize("depth", [20, 32, 56, 110])
def test_cifar_resnet_parameter_count(depth):
    model = build_model(f"resnet{depth}", 10)
    assert n_params(model) == cifar_resnet_params(depth, 10)
    # the paper's figures (He et al. 2016, table 6): 0.27M, 0.46M, 0.85M, 1.7M
    paper = {20: 0.27e6, 32: 0.46e6, 56: 0.85e6, 110: 1.7e6}[depth]
    assert abs(n_params(model) - paper) / paper < 0.03


# the AA paper's table (Bello et al. 2019): AA-ResNet-50/101/152 on ImageNet, AA-WRN-28-10 on CIFAR-100
AA_PAPER = [("resnet50", 1000, 25.8e6), ("resnet101", 1000, 45.4e6), ("resnet152", 1000, 61.6e6),
            ("wrn28_10", 100, 36.2e6)]


@pytest.mark.parametrize("name, classes, paper", AA_PAPER, ids=[n for n, _, _ in AA_PAPER])
def test_aa_models_have_the_aa_papers_parameters_with_the_defaults(name, classes, paper):
    """Defaults (8 heads, kappa 0.2, upsilon 0.1, at least 20 key channels per head, AA's placement): within 0.5%
    of the paper's count. Without the key-depth rule they fall 1-4% short (25.12M, 43.71M, 59.01M, 35.82M)."""
    n = n_params(build_model(name, classes, attention="aa"))
    assert abs(n - paper) / paper < 0.005, n
    short = n_params(build_model(name, classes, attention="aa", min_key_dims=0))
    assert (paper - short) / paper > 0.01, short


def test_cifar_resnet_has_three_stages_of_n_blocks_and_no_shortcut_params():
    model = build_model("resnet56", 10)
    assert [len(s) for s in model.stages()] == [9, 9, 9]
    assert [s[0].conv1.stride[0] for s in model.stages()] == [1, 2, 2]
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)


def test_wrn28_10_parameter_count_and_width():
    model = build_model("wrn28_10", 10)
    assert n_params(model) == wrn_params(28, 10, 10) == 36_479_194
    assert [s[0].conv1.out_channels for s in model.stages()] == [160, 320, 640]
    assert [len(s) for s in model.stages()] == [4, 4, 4]
    thin = build_model("wrn28_10", 10, width=0.1)  # widen factor 10 * 0.1 = 1
    assert n_params(thin) == wrn_params(28, 1, 10)


def test_cifar_width_multiplies_every_conv():
    model = build_model("resnet20", 10, width=0.5)
    assert model.conv1.out_channels == 8
    assert [s[-1].conv2.out_channels for s in model.stages()] == [8, 16, 32]
    assert n_params(model) == cifar_resnet_params(20, 10, (8, 16, 32))


@pytest.mark.parametrize("name", CIFAR_NAMES)
def test_cifar_nets_take_fashion_mnist(name):
    width = 0.1 if name == "wrn28_10" else 1.0
    model = build_model(name, 10, in_chans=1, width=width)
    x = torch.randn(2, 1, 28, 28)
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_stage_sides():
    assert stage_sides("resnet50", 224) == [(56, 56), (56, 28), (28, 14), (14, 7)]
    assert stage_sides("resnet20", 32) == [(32, 32), (32, 16), (16, 8)]
    assert stage_sides("wrn28_10", 28) == [(28, 28), (28, 14), (14, 7)]
    # odd sides: stride-2 3x3 conv with padding 1 gives ceil(side / 2); check against a real forward
    model = build_model("resnet18", 10).eval()
    sides = []
    hooks = [layer.register_forward_hook(lambda m, i, o: sides.append((i[0].shape[-1], o.shape[-1])))
             for layer in (model.layer1, model.layer2, model.layer3, model.layer4)]
    with torch.no_grad():
        model(torch.randn(1, 3, 75, 75))
    for h in hooks:
        h.remove()
    assert sides == stage_sides("resnet18", 75)


def test_model_from_config_plain():
    cfg = RunConfig.from_dict(model="resnet32", width=0.5)
    model = model_from_config(cfg, num_classes=7, in_chans=1, input_size=28)
    assert model.fc.out_features == 7 and model.conv1.in_channels == 1 and model.conv1.out_channels == 8
    assert model.attnrepro_spec["attention"] == "none" and model.attnrepro_spec["stages"] == []


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="resnet19"), "resnet19.*resnet18"),
    (dict(name="resnet18", width=0.5), "width.*resnet20"),
    (dict(name="resnet20", width=0.0), "width"),
    (dict(name="resnet20", num_classes=0), "num_classes"),
    (dict(name="resnet20", in_chans=0), "in_chans"),
    (dict(name="resnet20", input_size=0), "input_size"),
    (dict(name="resnet20", stages=[4]), r"stage 4.*\[1, 2, 3\]"),
    (dict(name="resnet50", stages=[0]), r"stage 0.*\[1, 2, 3, 4\]"),
    (dict(name="resnet50", stages=[]), "empty"),
    (dict(name="resnet50", stages=["2"]), "stage '2'"),
])
def test_bad_arguments_raise(kwargs, match):
    kwargs = dict(kwargs)
    name = kwargs.pop("name")
    num_classes = kwargs.pop("num_classes", 10)
    with pytest.raises(ValueError, match=match):
        build_model(name, num_classes, **kwargs)


def test_all_names_listed_and_split():
    assert set(MODEL_NAMES) == set(IMAGENET_NAMES) | set(CIFAR_NAMES)
