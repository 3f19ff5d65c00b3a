"""attnrepro.config: one vocabulary with types, defaults, choices; clear errors."""
import pytest

from attnrepro.config import KEYS, ConfigError, RunConfig, coerce, describe


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


def test_round_trip_and_describe():
    cfg = RunConfig.from_dict(epochs="4", stages="3", attention="expatt")
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    rows = describe()
    assert [r["key"] for r in rows] == list(KEYS)
    assert all(r["help"] for r in rows)
    assert next(r for r in rows if r["key"] == "dataset")["choices"][0] == "fashion_mnist"
