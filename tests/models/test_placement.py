"""Where the attention goes: stages, the replaced conv or the gate slot, stride and feature size; bad arguments."""
import pytest
import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from attnrepro.config import RunConfig
from attnrepro.models import build_model, expatt_layers, model_from_config, radii
from attnrepro.models.cifar import CifarBasicBlock, WideBasicBlock, pad_shortcut
from attnrepro.modules import AAConv2d, AWConv2d, CBAM, ExpAttConv2d, SqueezeExcite

CONV = {"expatt": ExpAttConv2d, "aa": AAConv2d, "aw": AWConv2d}
GATE = {"se": SqueezeExcite, "cbam": CBAM}
KINDS = tuple(CONV) + tuple(GATE)
ATTN_TYPES = tuple(CONV.values()) + tuple(GATE.values())

# (name, build kwargs) small enough for CPU tests
NETS = [("resnet18", {}), ("resnet50", {}), ("resnet20", {}), ("wrn28_10", {"width": 0.2})]


def stages_of(model):
    if hasattr(model, "stages"):
        return list(model.stages())
    return [model.layer1, model.layer2, model.layer3, model.layer4]


def slot(block):
    """(conv the conv kinds replace, the gate module or None)."""
    if isinstance(block, Bottleneck):
        return block.conv2, (block.bn3[1] if isinstance(block.bn3, nn.Sequential) else None)
    if isinstance(block, BasicBlock):
        return block.conv1, (block.bn2[1] if isinstance(block.bn2, nn.Sequential) else None)
    assert isinstance(block, (CifarBasicBlock, WideBasicBlock))
    return block.conv1, (None if isinstance(block.gate, nn.Identity) else block.gate)


def count(model, types):
    return sum(isinstance(m, types) for m in model.modules())


@pytest.mark.parametrize("name, kw", NETS, ids=[n for n, _ in NETS])
@pytest.mark.parametrize("kind", KINDS)
def test_default_placement(name, kw, kind):
    model = build_model(name, 10, attention=kind, **kw)
    plain = build_model(name, 10, **kw)
    imagenet = name.startswith("resnet") and int(name[6:]) in (18, 34, 50, 101, 152)
    expect = [2, 3, 4] if (kind in CONV and imagenet) else list(range(1, len(stages_of(model)) + 1))
    assert model.attnrepro_spec["stages"] == expect
    n_blocks = 0
    for s, (layer, ref_layer) in enumerate(zip(stages_of(model), stages_of(plain)), start=1):
        for block, ref in zip(layer, ref_layer):
            conv, gate = slot(block)
            ref_conv, _ = slot(ref)
            if s not in expect:
                assert type(conv) is nn.Conv2d and gate is None
                continue
            n_blocks += 1
            if kind in CONV:
                assert isinstance(conv, CONV[kind]) and gate is None
                # same geometry as the conv it replaces: channels and stride kept
                assert (conv.in_channels, conv.out_channels, conv.stride) == \
                    (ref_conv.in_channels, ref_conv.out_channels, ref_conv.stride[0])
            else:
                assert type(conv) is nn.Conv2d and isinstance(gate, GATE[kind])
    # exactly one attention module per block of the chosen stages, nowhere else
    assert count(model, ATTN_TYPES) == n_blocks > 0
    # the stem and the shortcuts stay plain convs
    assert type(model.conv1) is nn.Conv2d
    for n, m in model.named_modules():
        if n.endswith(("downsample", "downsample.0", "shortcut")) and not isinstance(m, nn.Sequential):
            assert type(m) is nn.Conv2d, n


def test_gates_follow_the_last_bn():
    model = build_model("resnet50", 10, attention="se", stages=[1])
    b = model.layer1[0]
    assert isinstance(b.bn3, nn.Sequential) and isinstance(b.bn3[0], nn.BatchNorm2d)
    assert isinstance(b.bn3[1], SqueezeExcite) and b.bn3[1].fc1.in_channels == 256
    model = build_model("resnet18", 10, attention="cbam", stages=[4])
    assert isinstance(model.layer4[1].bn2[1], CBAM) and model.layer4[1].bn2[0].num_features == 512


class Zero(nn.Module):
    def forward(self, x):
        return torch.zeros_like(x)


@pytest.mark.parametrize("name, kw", NETS, ids=[n for n, _ in NETS])
def test_gate_sits_on_the_residual_branch_before_the_add(name, kw):
    """A gate that outputs zeros must leave exactly the shortcut (then the block's final ReLU, if any)."""
    model = build_model(name, 10, attention="se", **kw).eval()
    block = stages_of(model)[1][0]  # a strided first block with a projection / padded shortcut
    x = torch.randn(2, block.conv1.in_channels, 8, 8)
    if isinstance(block, Bottleneck):
        block.bn3[1] = Zero()
        expect = torch.relu(block.downsample(x))
    elif isinstance(block, BasicBlock):
        block.bn2[1] = Zero()
        expect = torch.relu(block.downsample(x))
    elif isinstance(block, CifarBasicBlock):
        block.gate = Zero()
        expect = torch.relu(pad_shortcut(x, block.out_channels, block.stride))
    else:
        block.gate = Zero()
        expect = block.shortcut(torch.relu(block.bn1(x)))
    with torch.no_grad():
        assert torch.allclose(block(x), expect, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_attention_model_has_the_plain_models_feature_shapes(kind):
    sizes = {}
    for k in (None, kind):
        model = build_model("resnet18", 10, attention=k, stages=[1, 2, 3, 4], input_size=40).eval()
        shapes = []
        for layer in stages_of(model):
            for block in layer:
                block.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
        with torch.no_grad():
            model(torch.randn(1, 3, 40, 40))
        sizes[k] = shapes
    assert sizes[kind] == sizes[None] and len(sizes[None]) == 8


def test_aa_max_size_is_the_attended_side_of_each_block():
    model = build_model("resnet50", 10, attention="aa")  # 224: stage inputs 56, 56, 28, 14
    # the strided first block attends over its pooled input (the conv's output size)
    assert [[b.conv2.max_size for b in layer] for layer in (model.layer2, model.layer3, model.layer4)] == \
        [[28] * 4, [14] * 6, [7] * 3]
    model = build_model("resnet20", 10, attention="aa", input_size=28)
    assert [{b.conv1.max_size for b in layer} for layer in model.stages()] == [{28}, {14}, {7}]
    model = build_model("wrn28_10", 10, attention="aa", width=0.1, input_size=(30, 32))
    assert [{b.conv1.max_size for b in layer} for layer in model.stages()] == [{32}, {16}, {8}]


def test_aa_built_for_16_runs_on_8_and_refuses_32():
    model = build_model("resnet20", 10, attention="aa", input_size=16).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)
        assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)
        with pytest.raises(ValueError, match="max_size"):
            model(torch.randn(1, 3, 32, 32))


def test_user_max_size_overrides_the_computed_one():
    model = build_model("resnet20", 10, attention="aa", max_size=40)
    assert {m.max_size for m in model.modules() if isinstance(m, AAConv2d)} == {40}


def test_custom_stages_and_kwargs_reach_the_layers():
    model = build_model("resnet20", 10, attention="expatt", stages=[3, 3, 2], heads=2, radius_init=3.0)
    assert model.attnrepro_spec["stages"] == [2, 3]
    layers = expatt_layers(model)
    assert sorted(layers) == [f"layer{s}.{j}.conv1" for s in (2, 3) for j in range(3)]
    assert all(m.heads == 2 for m in layers.values())
    r = radii(model)
    assert set(r) == set(layers) and all(v == pytest.approx([3.0]) for v in r.values())
    model = build_model("resnet20", 10, attention="aw", aw_maps=4, reduction=2)
    assert {m.maps for m in model.modules() if isinstance(m, AWConv2d)} == {4}
    model = build_model("resnet50", 10, attention="se", reduction=4)
    assert model.layer1[0].bn3[1].fc1.out_channels == 256 // 4
    assert radii(build_model("resnet20", 10)) == {} and radii(model) == {}


def test_model_from_config_with_attention():
    cfg = RunConfig.from_dict(model="resnet32", attention="expatt", stages=[3], radius_init=1.5,
                              radius_per_head=True, heads=4, width=1.0)
    model = model_from_config(cfg, num_classes=10, in_chans=1, input_size=28)
    layers = expatt_layers(model)
    assert sorted(layers) == [f"layer3.{j}.conv1" for j in range(5)]
    assert all(len(v) == 4 and v == pytest.approx([1.5] * 4) for v in radii(model).values())
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    cfg = RunConfig.from_dict(model="wrn28_10", attention="aa", width=0.1)
    model = model_from_config(cfg, num_classes=10, in_chans=3, input_size=32)
    assert count(model, AAConv2d) == 12


def test_radius_follows_training():
    model = build_model("resnet20", 10, attention="expatt", stages=[3])
    name, layer = next(iter(expatt_layers(model).items()))
    with torch.no_grad():
        layer.log_radius.add_(0.5)
    assert radii(model)[name] == pytest.approx([2.0 * 2.718281828 ** 0.5], rel=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(attention="sa"), "sa.*expatt.*aa.*aw.*se.*cbam"),
    (dict(attention="se", kappa=0.2), "kappa.*reduction"),
    (dict(attention="expatt", kappa=0.2), "kappa.*radius_init"),
    (dict(attention="aw", maps=4), "maps.*aw_maps"),
    (dict(radius_init=1.0), "without an attention.*expatt"),
    (dict(attention="expatt", radius_init=0.0), "radius_init"),
    (dict(attention="expatt", radius_init=-1.0), "radius_init"),
    (dict(attention="expatt", heads=0), "heads"),
    (dict(attention="aa", upsilon=0.0), "upsilon"),
    (dict(attention="expatt", kernel="box"), "box.*gaussian"),
    (dict(attention="aa", stages=[4]), r"stage 4.*\[1, 2, 3\]"),
    (dict(attention="se", stages=[]), "empty"),
])
def test_bad_attention_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model("resnet20", 10, **kwargs)
