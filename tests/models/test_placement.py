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


COMBOS = {"aw+se": (AWConv2d, SqueezeExcite), "aw+cbam": (AWConv2d, CBAM), "aa+se": (AAConv2d, SqueezeExcite)}
# (kind, model, stages): every combination on a bottleneck net and a CIFAR net with default stages; one with stages
COMBO_CASES = [(k, n, None) for k in COMBOS for n in ("resnet50", "resnet20")] + [("aw+se", "resnet20", [2])]


@pytest.mark.parametrize("kind, name, stages", COMBO_CASES, ids=[f"{k}-{n}-{s}" for k, n, s in COMBO_CASES])
def test_combination_puts_each_part_where_it_sits_alone(kind, name, stages):
    """aw+se: AW where aw alone goes (default: stages 2-4 of an ImageNet ResNet), SE where se alone goes (every
    stage); with ``stages`` both parts go there."""
    conv_kind, gate_kind = kind.split("+")
    conv_type, gate_type = COMBOS[kind]
    model = build_model(name, 10, attention=kind, stages=stages)
    alone = {k: build_model(name, 10, attention=k, stages=stages) for k in (conv_kind, gate_kind)}
    want = {k: alone[k].attnrepro_spec["stages"] for k in alone}
    if name == "resnet50":
        assert want == {conv_kind: [2, 3, 4], gate_kind: [1, 2, 3, 4]}
    elif stages is not None:
        assert want == {conv_kind: [2], gate_kind: [2]}
    assert model.attnrepro_spec["part_stages"] == want
    assert model.attnrepro_spec["stages"] == sorted(set(want[conv_kind]) | set(want[gate_kind]))
    # block by block: the conv slot as in the conv kind's model, the gate slot as in the gate kind's model
    for layer, c_layer, g_layer in zip(stages_of(model), stages_of(alone[conv_kind]), stages_of(alone[gate_kind])):
        for block, c_block, g_block in zip(layer, c_layer, g_layer):
            conv, gate = slot(block)
            assert type(conv) is type(slot(c_block)[0]) and type(gate) is type(slot(g_block)[1])
    assert count(model, conv_type) == count(alone[conv_kind], conv_type) > 0
    assert count(model, gate_type) == count(alone[gate_kind], gate_type) > 0
    n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n_params(model) == n_params(alone[conv_kind]) + n_params(alone[gate_kind]) - n_params(build_model(name, 10))


def test_combination_routes_each_part_its_kwargs():
    model = build_model("resnet20", 10, attention="aw+se", reduction=4, aw_maps=2)
    aw = [m for m in model.modules() if isinstance(m, AWConv2d)]
    se = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    assert {m.maps for m in aw} == {2} and aw[-1].pw1.out_channels == max(64 // 4, 8)
    assert se[-1].fc1.out_channels == 64 // 4          # reduction reached both parts
    model = build_model("resnet20", 10, attention="aa+cbam", heads=2, min_key_dims=0, max_size=40)
    assert {(m.heads, m.max_size) for m in model.modules() if isinstance(m, AAConv2d)} == {(2, 40)}
    cfg = RunConfig.from_dict(model="resnet20", attention="aw+cbam", reduction=8, aw_maps=3, stages=[3])
    model = model_from_config(cfg, num_classes=10, in_chans=1, input_size=28)
    assert model.attnrepro_spec["part_stages"] == {"aw": [3], "cbam": [3]}
    assert {m.maps for m in model.modules() if isinstance(m, AWConv2d)} == {3}
    assert {m.mlp[0].out_channels for m in model.modules() if isinstance(m, CBAM)} == {64 // 8}


def test_combination_trains_a_step():
    torch.manual_seed(0)
    model = build_model("resnet20", 10, attention="aw+se", width=0.5, input_size=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    for part in ("pw1.weight", "pw2.weight", "fc1.weight", "fc2.weight", "conv1.weight"):
        assert any(n.endswith(part) for n in moved), part


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
@pytest.mark.parametrize("j", [0, 1], ids=["first", "identity"])
def test_gate_sits_on_the_residual_branch_before_the_add(name, kw, j):
    """A gate that outputs zeros must leave exactly the shortcut (then the block's final ReLU, if any): for the
    strided first block of stage 2 (projection / padded shortcut) and for an identity block."""
    model = build_model(name, 10, attention="se", **kw).eval()
    block = stages_of(model)[1][j]
    x = torch.randn(2, block.conv1.in_channels, 8, 8)
    if isinstance(block, Bottleneck):
        block.bn3[1] = Zero()
        expect = torch.relu(block.downsample(x) if j == 0 else x)
    elif isinstance(block, BasicBlock):
        block.bn2[1] = Zero()
        expect = torch.relu(block.downsample(x) if j == 0 else x)
    elif isinstance(block, CifarBasicBlock):
        block.gate = Zero()
        # option A by hand: every second pixel, zero channels appended
        sub = x[:, :, ::2, ::2] if j == 0 else x
        expect = torch.relu(torch.cat([sub, torch.zeros(2, block.out_channels - sub.shape[1], *sub.shape[2:])], 1))
    else:
        block.gate = Zero()
        # the authors' WRN: the projection takes the pre-activated input; an identity shortcut the raw input
        expect = block.shortcut(torch.relu(block.bn1(x))) if j == 0 else x
    with torch.no_grad():
        assert torch.allclose(block(x), expect, atol=1e-6)


def test_option_a_shortcut_by_definition():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    out = pad_shortcut(x, 5, 2)
    assert out.shape == (2, 5, 2, 2)
    assert torch.equal(out[:, :3], x[:, :, 0::2, 0::2]) and torch.all(out[:, 3:] == 0)
    assert torch.equal(pad_shortcut(x, 3, 1), x)


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
    (dict(attention="sa"), "sa.*none, expatt.*aa.*aw.*se.*cbam.*aw\\+se"),
    (dict(attention="se+cbam"), "se\\+cbam.*one conv kind.*aw\\+cbam"),
    (dict(attention="aa+aw"), "aa\\+aw.*one conv kind"),
    (dict(attention="aw+aw"), "aw\\+aw.*one conv kind"),
    (dict(attention="se+aw"), "did you mean 'aw\\+se'"),
    (dict(attention="aw+se", kappa=0.2), "kappa.*reduction, aw_maps"),
    (dict(attention="aa", min_key_dims=-1), "min_key_dims=-1"),
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
