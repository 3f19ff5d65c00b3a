"""The registry of attention kinds: the built-in five, registering a kind of one's own (from a plugin file outside
the package), and every place that reads the kinds (config choices, factory, placement, hash, FLOP table, bench)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from eca_plugin import write_eca_plugin

import attnrepro
from attnrepro import cli, registry
from attnrepro.config import ATTENTIONS, ConfigError, RunConfig
from attnrepro.modules import factory

BUILTIN = ("expatt", "aa", "aw", "se", "cbam")


class _Gate(nn.Module):
    """A gate that keeps its input (enough for the registry's own checks)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.reduction = reduction

    def forward(self, x):
        return x * self.scale[:, None, None]


@pytest.fixture
def eca(tmp_path):
    """The README's ECA plugin, loaded from a file in a temp folder."""
    path = write_eca_plugin(tmp_path)
    registry.use_plugins([path])
    return path


def test_the_builtin_kinds_and_what_derives_from_them():
    assert registry.layer_kinds() == BUILTIN
    assert registry.conv_kinds() == ("expatt", "aa", "aw") and registry.gate_kinds() == ("se", "cbam")
    assert registry.combined_kinds() == tuple(f"{c}+{g}" for c in ("expatt", "aa", "aw") for g in ("se", "cbam"))
    assert registry.model_kinds() == BUILTIN + registry.combined_kinds()
    assert tuple(ATTENTIONS) == ("none",) + registry.model_kinds()
    assert factory.MODEL_KINDS == registry.model_kinds() and set(factory.ACCEPTED_KWARGS) == set(factory.MODEL_KINDS)
    # the keys a kind may accept are exactly those some built-in kind takes: the hash resets the others
    assert set(registry.ATTENTION_KEYS) == {k for n in BUILTIN for k in registry.accepted(n)}
    assert all(registry.get(n).builtin for n in BUILTIN)
    assert registry.title("aw+se") == "AW+SE" and registry.title("expatt") == "ExpAtt"


def test_a_registered_gate_is_a_choice_everywhere_and_combines(eca):
    assert registry.gate_kinds() == ("se", "cbam", "eca") and registry.get("eca").source == str(eca.resolve())
    for k in ("eca", "aw+eca", "aa+eca", "expatt+eca"):
        assert k in ATTENTIONS and k in registry.model_kinds()
    assert registry.accepted("aw+eca") == registry.accepted("aw")
    cfg = RunConfig.from_dict({"attention": "aw+eca", "model": "resnet20"})
    from attnrepro.models import build_model
    model = build_model("resnet20", 10, attention=cfg.attention)
    eca_cls = type(registry.get("eca").build(16))
    blocks = [m for m in model.modules() if hasattr(m, "gate") and not isinstance(m, eca_cls)]
    assert blocks and all(isinstance(b.gate, eca_cls) for b in blocks)     # a gate in every block (every stage)
    assert model.attnrepro_spec["part_stages"] == {"aw": [1, 2, 3], "eca": [1, 2, 3]}
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 10)


def test_a_registered_kinds_config_hashes_like_any_and_no_existing_hash_moves(tmp_path):
    before = {k: RunConfig(attention=k, stages=s).hash() for k in ("none",) + registry.model_kinds()
              for s in (None, [1], [2, 3])}
    registry.use_plugins([write_eca_plugin(tmp_path)])
    after = {k: RunConfig(attention=k, stages=s).hash() for k in ("none",) + registry.model_kinds()
             for s in (None, [1], [2, 3])}
    assert {k: after[k] for k in before} == before
    eca = RunConfig(attention="eca")
    assert eca.hash() not in set(before.values())
    assert eca.replace(kernel="cauchy", heads=2).hash() == eca.hash()     # keys ECA does not take
    assert eca.replace(stages=[1, 2, 3]).hash() == eca.hash()              # its default placement
    assert eca.replace(stages=[3]).hash() != eca.hash()
    assert RunConfig(attention="aw+eca").replace(reduction=4).hash() != RunConfig(attention="aw+eca").hash()


def test_registering_a_taken_name_is_refused_naming_the_kinds():
    with pytest.raises(registry.RegistryError, match=r"'se' is already registered \(a gate kind, from attnrepro\)"
                                                     r".*registered kinds: expatt, aa, aw, se, cbam"):
        attnrepro.register("se", kind="gate", build=_Gate)
    attnrepro.register("mygate", kind="gate", build=_Gate)
    with pytest.raises(registry.RegistryError, match="'mygate' is already registered.*unregister"):
        attnrepro.register("mygate", kind="gate", build=_Gate)
    registry.unregister("mygate")
    attnrepro.register("mygate", kind="gate", build=_Gate)      # free again
    with pytest.raises(registry.RegistryError, match="built in"):
        registry.unregister("se")


@pytest.mark.parametrize("kwargs, words", [
    ({"kind": "block"}, r"kind='block' is not valid for attention kind 'mine'; choose one of: conv, gate"),
    ({"kind": "gate", "accepts": ("lr",)}, r"cannot accept 'lr'.*among: heads, upsilon, .*reduction, aw_maps"),
    ({"kind": "gate", "accepts": ("max_size",)}, "only a conv kind gets 'max_size'"),
    ({"kind": "gate", "build": "SE"}, "build='SE' .* is not callable"),
])
def test_a_bad_registration_names_the_bad_value_and_the_valid_ones(kwargs, words):
    with pytest.raises(registry.RegistryError, match=words):
        attnrepro.register("mine", **{"build": _Gate, **kwargs})
    assert "mine" not in registry.names()


@pytest.mark.parametrize("name", ["ECA", "aw+eca", "none", "2x", "", None])
def test_a_bad_name_is_refused(name):
    with pytest.raises(registry.RegistryError, match="is not valid: use lower-case letters"):
        attnrepro.register(name, kind="gate", build=_Gate)


def test_an_unknown_attention_names_the_valid_kinds_registered_ones_included(eca):
    with pytest.raises(ConfigError, match=r"attention='bam' is not valid; choose one of: none, expatt, .*cbam, eca, "
                                          r".*aw\+eca.*--plugin FILE.py") as e:
        RunConfig.from_dict({"attention": "bam"})
    assert "Adding a module" in str(e.value)
    with pytest.raises(ValueError, match=r"valid kinds: expatt, aa, aw, se, cbam, eca, .*aw\+eca"):
        factory.check_kind("bam")
    with pytest.raises(ValueError, match=r"one conv kind \(expatt, aa, aw\) and one gate kind \(se, cbam, eca\)"
                                         r", conv first; did you mean 'aw\+eca'"):
        factory.check_kind("eca+aw")


def test_a_registered_conv_kind_replaces_the_conv_and_gets_max_size_when_it_asks():
    seen = []

    def build(in_channels, out_channels, kernel_size, stride, heads=8, max_size=None):
        seen.append((in_channels, out_channels, stride, heads, max_size))
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False)

    attnrepro.register("myconv", kind="conv", build=build, accepts=("heads", "max_size"))
    from attnrepro.models import build_model
    m = build_model("resnet20", 10, attention="myconv", stages=[3], input_size=32, heads=2)
    assert seen == [(32, 64, 2, 2, 8), (64, 64, 1, 2, 8), (64, 64, 1, 2, 8)]
    assert m.attnrepro_spec["stages"] == [3]
    assert "myconv+se" in RunConfig.__dataclass_fields__["attention"].metadata["choices"]
    with pytest.raises(ValueError, match="'myconv' does not accept keyword 'reduction'; accepted: heads, max_size"):
        build_model("resnet20", 10, attention="myconv", reduction=4)


def test_flops_table_and_benchmarks_pick_up_a_registered_kind(eca, one_thread):
    from attnrepro.bench import gates, train_step
    from attnrepro.bench.harness import Ctx, Settings
    from attnrepro.flops import complexity_table

    df = complexity_table(["resnet20"], input_size=16)
    assert list(df["attention"]) == ["none", *BUILTIN, "eca"]
    params = dict(zip(df["attention"], df["params"]))
    assert params["eca"] - params["none"] == 9 * 3       # 9 blocks of 16-64 channels, a 3-tap conv each
    assert train_step.ATTENTION_KINDS_BENCHED == BUILTIN + ("eca",)
    rows = gates.case_gates(Ctx(torch.device("cpu"), True, Settings.quick(), log=lambda s: None))
    assert [r.benchmark for r in rows] == ["block + SE vs block", "block + CBAM vs block", "block + ECA vs block"]
    assert "reduction" not in rows[-1].config and "reduction 16" in rows[0].config


# ---------------------------------------------------------------------------- plugin files
def test_a_plugin_loads_once_and_reaches_the_environment(tmp_path):
    path = write_eca_plugin(tmp_path)
    assert registry.use_plugins([path]) == [str(path.resolve())]
    registry.use_plugins([path])                               # again: a no-op, not a duplicate registration
    assert registry.gate_kinds().count("eca") == 1
    assert os.environ[registry.PLUGINS_ENV].split(os.pathsep) == [str(path.resolve())]
    assert registry.loaded_plugins() == (str(path.resolve()),)


def test_the_environment_alone_loads_a_plugin_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.PLUGINS_ENV, str(write_eca_plugin(tmp_path)))
    assert RunConfig.from_dict({"attention": "eca"}).attention == "eca"
    monkeypatch.setenv(registry.PLUGINS_ENV, str(tmp_path / "gone.py"))
    with pytest.raises(registry.PluginError, match=r"gone.py' is not a file.*named in \$ATTNREPRO_PLUGINS"):
        registry.names()


def test_a_child_process_gets_the_plugin_from_the_environment_and_not_without(tmp_path):
    """What a notebook kernel or a torchrun child does: a fresh interpreter that only inherits the environment."""
    code = "from attnrepro.config import RunConfig; print(RunConfig.from_dict({'attention': 'aa+eca'}).attention)"
    lib = str(Path(attnrepro.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": lib, registry.PLUGINS_ENV: str(write_eca_plugin(tmp_path))}
    ok = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and ok.stdout.strip() == "aa+eca", ok.stderr
    env[registry.PLUGINS_ENV] = ""
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "attention='aa+eca' is not valid" in bad.stderr


def test_a_failing_plugin_names_its_file_and_registers_nothing(tmp_path):
    p = tmp_path / "broken.py"
    p.write_text("import attnrepro, torch.nn as nn\n"
                 "attnrepro.register('half', kind='gate', build=lambda c: nn.Identity())\n"
                 "raise RuntimeError('half-way')\n")
    with pytest.raises(registry.PluginError, match=r"broken.py: RuntimeError: half-way"):
        registry.use_plugins([p])
    assert "half" not in registry.names() and str(p.resolve()) not in os.environ.get(registry.PLUGINS_ENV, "")
    dup = tmp_path / "dup.py"
    dup.write_text("import attnrepro, torch.nn as nn\n"
                   "attnrepro.register('cbam', kind='gate', build=lambda c: nn.Identity())\n")
    with pytest.raises(registry.PluginError, match=r"dup.py: RegistryError: attention kind 'cbam' is already"):
        registry.load_plugin(dup)
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(registry.PluginError, match="is not a .py file"):
        registry.load_plugin(tmp_path / "notes.txt")


def test_the_plugin_option_on_the_command_line(tmp_path, capsys):
    path = write_eca_plugin(tmp_path)
    assert cli.main(["config", "--format", "json", "--plugin", str(path)]) == 0
    rows = {r["key"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["attention"]["choices"][-1] == "aw+eca" and "eca" in rows["attention"]["choices"]
    assert cli.main(["config", "--plugin", str(tmp_path / "nosuch.py")]) == 2
    err = capsys.readouterr().err
    assert "attnrepro config: error: plugin" in err and "nosuch.py' is not a file" in err
    parser = cli.build_parser()
    for command in ("run", "train", "report", "bench", "list", "compare"):
        sub = parser._subparsers._group_actions[0].choices[command]
        assert any("--plugin" in a.option_strings for a in sub._actions), command


def test_the_reports_baseline_wording_names_the_kinds_run_as_the_registry_titles_them(eca):
    from types import SimpleNamespace

    import pandas as pd

    from attnrepro.analysis import sections

    runs = pd.DataFrame({"ablation": ["baseline"] * 5 + ["kernel"],
                         "attention": ["aw+eca", "none", "eca", "se", "expatt", "aa"]})
    text = sections._ablation_text(SimpleNamespace(runs=runs), "baseline")
    assert text == "The plain backbone and every attention module (ExpAtt, SE, ECA, AW+ECA) with the same recipe."
    assert "those of its grid" in sections._ablation_text(SimpleNamespace(runs=pd.DataFrame()), "baseline")


def test_the_readme_eca_is_the_papers_gate(eca):
    """The README's layer against a hand-written loop: mean over space, a k-tap correlation across the channels
    (zeros beyond the ends), sigmoid, times the input; k as the README says (3 for 8 to 64 channels, 5 for 128 to
    512)."""
    mod = registry.load_plugin(eca)          # loaded already: its module
    assert [mod.eca_kernel_size(c) for c in (8, 16, 32, 64, 128, 256, 512)] == [3, 3, 3, 3, 5, 5, 5]
    torch.manual_seed(0)
    layer = mod.ECA(128)
    x = torch.randn(2, 128, 5, 4)
    w = layer.conv.weight.detach().reshape(-1)
    k = w.numel()
    pooled = x.mean(dim=(2, 3))
    want = torch.empty_like(pooled)
    for c in range(128):
        want[:, c] = sum(w[j] * pooled[:, c + j - k // 2] for j in range(k) if 0 <= c + j - k // 2 < 128)
    torch.testing.assert_close(layer(x), x * torch.sigmoid(want)[:, :, None, None])
    assert k == 5 and sum(p.numel() for p in layer.parameters()) == 5
