"""The factory builds every kind by name, takes RunConfig keys, and names valid choices in its errors."""
import pytest
import torch

from attnrepro.config import RunConfig
from attnrepro.modules import (ACCEPTED_KWARGS, ATTENTION_KINDS, COMBINED_KINDS, CONV_KINDS, GATE_KINDS, MODEL_KINDS,
                               AAConv2d, AWConv2d, CBAM, ExpAttConv2d, SqueezeExcite, attention_kwargs, check_kind,
                               create_attention, create_conv, create_gate, route_kwargs, split_kind)


def test_kinds():
    assert CONV_KINDS == ("expatt", "aa", "aw") and GATE_KINDS == ("se", "cbam")
    assert ATTENTION_KINDS == CONV_KINDS + GATE_KINDS
    assert set(COMBINED_KINDS) == {f"{c}+{g}" for c in CONV_KINDS for g in GATE_KINDS} >= {"aw+se", "aw+cbam"}
    assert MODEL_KINDS == ATTENTION_KINDS + COMBINED_KINDS and set(ACCEPTED_KWARGS) == set(MODEL_KINDS)
    # the run config offers exactly these (both read attnrepro.registry; tests/modules/test_registry.py adds one)
    assert RunConfig.__dataclass_fields__["attention"].metadata["choices"] == ("none",) + MODEL_KINDS
    for keys in ACCEPTED_KWARGS.values():   # every accepted name is a RunConfig key (max_size comes from models)
        assert set(keys) - {"max_size"} <= set(RunConfig.__dataclass_fields__)
    assert "min_key_dims" in ACCEPTED_KWARGS["aa"] and "min_key_dims" not in ACCEPTED_KWARGS["expatt"]


def test_combined_kinds_split_and_route():
    assert split_kind("aw+se") == ("aw", "se") and split_kind("aa") == ("aa",)
    assert ACCEPTED_KWARGS["aw+se"] == ("reduction", "aw_maps")
    assert set(ACCEPTED_KWARGS["aa+cbam"]) == set(ACCEPTED_KWARGS["aa"]) | {"reduction"}
    # reduction goes to both parts, aw_maps to AW only
    assert route_kwargs("aw+se", {"reduction": 4, "aw_maps": 2}) == {"aw": {"reduction": 4, "aw_maps": 2},
                                                                      "se": {"reduction": 4}}
    assert route_kwargs("aa+cbam", {"heads": 2}) == {"aa": {"heads": 2}, "cbam": {}}
    assert route_kwargs("aa", {"heads": 2}) == {"aa": {"heads": 2}}
    with pytest.raises(ValueError, match="'kernel'.*reduction, aw_maps"):
        route_kwargs("aw+cbam", {"kernel": "cauchy"})
    cfg = RunConfig(attention="aw+se", reduction=8, aw_maps=3, kappa=0.5)
    assert attention_kwargs("aw+se", cfg) == {"reduction": 8, "aw_maps": 3}


@pytest.mark.parametrize("bad, match", [
    ("se+cbam", "one conv kind .*one gate kind"),
    ("aa+aw", "one conv kind .*one gate kind"),
    ("aw+aw", "one conv kind .*one gate kind"),
    ("se+aw", "did you mean 'aw\\+se'"),
    ("aw+se+cbam", "one conv kind"),
    ("aw+", "one conv kind"),
    ("AW+SE", "valid kinds: .*aw\\+se"),
    ("bam", "valid kinds: expatt, aa, aw, se, cbam, expatt\\+se"),
])
def test_nonsense_combinations_are_rejected_with_the_valid_kinds(bad, match):
    for f in (check_kind, split_kind, lambda k: attention_kwargs(k, {})):
        with pytest.raises(ValueError, match=match) as e:
            f(bad)
        assert repr(bad) in str(e.value) and "aw+cbam" in str(e.value)
    with pytest.raises(ValueError, match="build_model"):   # a combination is no single layer
        create_attention("aw+se", 16)


@pytest.mark.parametrize("kind,cls", [("expatt", ExpAttConv2d), ("aa", AAConv2d), ("aw", AWConv2d)])
def test_create_conv(kind, cls):
    layer = create_conv(kind, 16, 32, 3, 2)
    assert type(layer) is cls and layer.stride == 2
    assert layer(torch.randn(2, 16, 8, 8)).shape == (2, 32, 4, 4)


def test_kwargs_reach_the_layers():
    cfg = RunConfig(attention="expatt", kernel="cauchy", radius_init=3.0, learn_radius=False, heads=4,
                    radius_per_head=True, aw_maps=2, kappa=0.4, upsilon=0.25, min_key_dims=7)
    e = create_conv("expatt", 32, 64, **attention_kwargs("expatt", cfg))
    assert e.kernel == "cauchy" and e.heads == 4 and e.radius.shape == (4,) and not e.log_radius.requires_grad
    assert e.radius[0].item() == pytest.approx(3.0) and e.dv == 16
    a = create_conv("aa", 32, 64, **attention_kwargs("aa", cfg), max_size=8)
    assert a.max_size == 8 and a.dk == 4 * 7 and a.heads == 4   # max(7, round(0.4 * 64 / 4)) keys per head
    w = create_conv("aw", 32, 64, **attention_kwargs("aw", cfg))
    assert w.maps == 2
    s = create_gate("se", 32, **attention_kwargs("se", {"reduction": 8, "kernel": "gaussian"}))
    assert isinstance(s, SqueezeExcite) and s.fc1.out_channels == 4
    assert attention_kwargs("aw", cfg) == {"reduction": 16, "aw_maps": 2}
    assert attention_kwargs("none", cfg) == {} and attention_kwargs(None, cfg) == {}
    assert attention_kwargs("aa", {"heads": 2}) == {"heads": 2}


def test_create_attention_dispatches():
    assert isinstance(create_attention("cbam", 16), CBAM)
    aa = create_attention("aa", 16, 24, stride=2, heads=2)
    assert isinstance(aa, AAConv2d) and aa.out_channels == 24 and aa.stride == 2
    assert create_attention("aw", 16).out_channels == 16
    with pytest.raises(ValueError, match="out_channels"):
        create_attention("se", 16, 32)


def test_errors_name_the_choices():
    with pytest.raises(ValueError, match="expatt, aa, aw, se, cbam"):
        create_attention("bam", 16)
    with pytest.raises(ValueError, match="expatt, aa, aw"):
        create_conv("se", 16, 16)
    with pytest.raises(ValueError, match="se, cbam"):
        create_gate("aa", 16)
    with pytest.raises(ValueError, match="'kappa'.*heads, upsilon, kernel"):
        create_conv("expatt", 16, 16, kappa=0.2)
    with pytest.raises(ValueError, match="reduction, aw_maps"):
        create_conv("aw", 16, 16, maps=3)
    with pytest.raises(ValueError, match="expatt, aa, aw, se, cbam"):
        attention_kwargs("bam", {})


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")  # tracer noise
@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_every_kind_traces_in_eval(kind):
    """Op counters (fvcore) trace the layers in eval mode."""
    layer = create_attention(kind, 16, 32 if kind in CONV_KINDS else None).eval()
    x = torch.randn(1, 16, 6, 6)
    traced = torch.jit.trace(layer, x)
    assert torch.allclose(traced(x), layer(x), atol=1e-5)
