"""attnrepro.config: one vocabulary with types, defaults, choices; clear errors."""
import pytest

import dataclasses

from attnrepro.config import _NOT_HASHED, KEYS, ConfigError, RunConfig, coerce, describe


def test_strings_are_coerced_to_the_declared_types():
    assert coerce("epochs", "3") == 3 and coerce("epochs", "1e2") == 100
    assert coerce("lr", "1e-3") == pytest.approx(1e-3)
    assert coerce("learn_radius", "false") is False and coerce("compile", "yes") is True
    assert coerce("stages", "[3, 4]") == [3, 4] and coerce("stages", "2,3") == [2, 3] and coerce("stages", 3) == [3]
    assert coerce("stages", "none") is None and coerce("data_dir", "null") is None


@pytest.mark.parametrize("key, value", [("epochs", "2.5"), ("epochs", True), ("learn_radius", "maybe"),
                                        ("stages", "[1.5]"), ("lr", "fast"), ("dataset", 3)])
def test_bad_types_name_key_and_value(key, value):
    with pytest.raises(ConfigError, match=key):
        coerce(key, value)


def test_unknown_key_suggests_close_matches():
    with pytest.raises(ConfigError, match="did you mean radius_init"):
        RunConfig.from_dict({"radius_int": 1.0})


def test_choices_and_ranges():
    with pytest.raises(ConfigError, match="choose one of: cosine, expatt, aa, constant"):
        RunConfig.from_dict(schedule="onecycle")
    with pytest.raises(ConfigError, match="must be > 0"):
        RunConfig.from_dict(lr=0)
    with pytest.raises(ConfigError, match="<= 0.5"):
        RunConfig.from_dict(val_split=0.9)
    with pytest.raises(ConfigError, match="stage 4 does not exist in resnet20"):
        RunConfig.from_dict(model="resnet20", stages=[4])
    assert RunConfig.from_dict(model="resnet50", stages=[4]).stages == [4]
    with pytest.raises(ConfigError, match="needs data_dir"):
        RunConfig.from_dict(dataset="imagefolder")


def test_hash_ignores_where_but_not_what():
    a = RunConfig()
    assert a.hash() == RunConfig(data_dir="/somewhere", num_workers=1, device="cpu").hash()
    assert a.hash() != a.replace(lr=0.2).hash() and a.hash() != a.replace(seed=1).hash()
    assert len(a.hash()) == 16


def other_value(key: str, cfg: RunConfig):
    """A valid value of ``key`` other than ``cfg``'s (checked by validation)."""
    f = next(f for f in dataclasses.fields(RunConfig) if f.name == key)
    v, meta = getattr(cfg, key), f.metadata
    if meta.get("choices"):
        candidates = [c for c in meta["choices"] if c != v]
    elif isinstance(v, bool):
        candidates = [not v]
    elif key == "stages":
        candidates = [[1], [2, 3]]
    elif isinstance(v, int):
        candidates = [v + 1, v - 1]
    elif isinstance(v, float):
        candidates = [v / 2, v + 0.1, v * 2]
    else:   # free strings and None (data_dir)
        candidates = ["elsewhere"]
    for c in candidates:
        try:
            new = cfg.replace(**{key: c})
        except ConfigError:
            continue
        if getattr(new, key) != v:
            return new
    raise AssertionError(f"no other valid value for {key}")


def _kind_using(key: str) -> str:
    """An attention kind that takes ``key`` (``none`` for the keys no kind takes)."""
    from attnrepro import registry

    if key == "stages":
        return "expatt"
    return next((k for k in registry.layer_kinds() if key in registry.accepted(k)), "none")


@pytest.mark.parametrize("key", KEYS)
def test_every_hashed_key_changes_the_hash_and_no_other_does(key):
    """A key left out of the hash serves a run from the cache for a different config (e.g. max_steps: a truncated
    run passed off as the full one); a location in the hash re-runs what is already there. Attention keys are
    changed on a kind that takes them."""
    cfg = RunConfig(attention=_kind_using(key))
    changed = other_value(key, cfg)
    if key in _NOT_HASHED:
        assert changed.hash() == cfg.hash()
    else:
        assert changed.hash() != cfg.hash(), key


def test_not_hashed_are_only_where_how_many_and_how_often():
    assert _NOT_HASHED == {"data_dir", "num_workers", "device", "checkpoint_every"}


@pytest.mark.parametrize("key, value", [("deterministic", True), ("sync_bn", True), ("seed_stream", 1)])
def test_added_keys_leave_the_hash_at_their_default(key, value):
    """Keys added after run records were published: at their default the hash is the one the records carry; set,
    they change it (they change what a run computes)."""
    from attnrepro.config import ADDED_KEYS
    assert key in ADDED_KEYS
    cfg = RunConfig()
    assert key not in cfg.canonical() and key in cfg.replace(**{key: value}).canonical()
    assert cfg.replace(**{key: value}).hash() != cfg.hash()


def test_attention_kinds_combinations_and_key_depth():
    for kind in ("aw+se", "aw+cbam", "aa+se"):
        assert RunConfig.from_dict(attention=kind).attention == kind
    for bad in ("se+cbam", "aa+aw", "aw+aw", "se+aw"):
        with pytest.raises(ConfigError, match=r"attention=.*choose one of: none, .*aw\+se, aw\+cbam"):
            RunConfig.from_dict(attention=bad)
    assert RunConfig().min_key_dims == 20 and RunConfig.from_dict(min_key_dims="0").min_key_dims == 0
    with pytest.raises(ConfigError, match="min_key_dims=-1 .*>= 0"):
        RunConfig.from_dict(min_key_dims=-1)
    assert RunConfig.from_dict(kappa=1.5).kappa == 1.5            # d_k may exceed F_out
    with pytest.raises(ConfigError, match="kappa=0.0 .*> 0"):
        RunConfig.from_dict(kappa=0.0)
    with pytest.raises(ConfigError, match="upsilon=1.5 .*<= 1"):
        RunConfig.from_dict(upsilon=1.5)
    assert "20" in next(r for r in describe() if r["key"] == "min_key_dims")["help"]


def test_round_trip_and_describe():
    cfg = RunConfig.from_dict(epochs="4", stages="3", attention="expatt")
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    rows = describe()
    assert [r["key"] for r in rows] == list(KEYS)
    assert all(r["help"] for r in rows)
    assert next(r for r in rows if r["key"] == "dataset")["choices"][0] == "fashion_mnist"


@pytest.mark.parametrize("a,b", [
    ({"attention": "expatt", "stages": [1, 2, 3]}, {"attention": "expatt"}),                  # 'all' is the default
    ({"attention": "expatt", "stages": [3, 2, 1, 3]}, {"attention": "expatt"}),
    ({"attention": "none", "stages": [3], "kernel": "cauchy"}, {"attention": "none"}),        # nothing placed
    ({"attention": "aa", "kernel": "laplacian", "radius_init": 8.0}, {"attention": "aa"}),   # expatt-only keys
    ({"attention": "se", "kappa": 0.5, "heads": 2}, {"attention": "se"}),
    ({"model": "resnet50", "attention": "aa", "stages": [4, 2, 3]}, {"model": "resnet50", "attention": "aa"}),
    ({"model": "resnet50", "attention": "se", "stages": [1, 2, 3, 4]}, {"model": "resnet50", "attention": "se"}),
])
def test_configs_that_train_the_same_model_share_a_hash(a, b):
    assert RunConfig.from_dict(a).hash() == RunConfig.from_dict(b).hash()


@pytest.mark.parametrize("a,b", [
    ({"attention": "expatt", "stages": [3]}, {"attention": "expatt"}),
    ({"attention": "expatt", "kernel": "cauchy"}, {"attention": "expatt"}),
    ({"attention": "aa", "heads": 2}, {"attention": "aa"}),
    ({"attention": "aw+se", "reduction": 8}, {"attention": "aw+se"}),
    # aw+se on ResNet-50: default aw [2, 3, 4] and se [1..4]; stages [1..4] puts aw in stage 1 too
    ({"model": "resnet50", "attention": "aw+se", "stages": [1, 2, 3, 4]}, {"model": "resnet50", "attention": "aw+se"}),
    ({"model": "resnet50", "attention": "aa", "stages": [1, 2, 3, 4]}, {"model": "resnet50", "attention": "aa"}),
])
def test_configs_that_train_different_models_do_not(a, b):
    assert RunConfig.from_dict(a).hash() != RunConfig.from_dict(b).hash()
