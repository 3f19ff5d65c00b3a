"""A module of one's own, end to end: the README's ECA plugin, from a file outside the package, runs in the baseline
ablation on the smoke preset, named with ``--variants eca`` (the baseline grid runs any attention kind on request), so
the package and the committed notebooks are untouched. The papermill kernel and the preflight both need the plugin:
the kernel gets it through $ATTNREPRO_PLUGINS, which --plugin sets."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from eca_plugin import write_eca_plugin

from attnrepro import cli

REPO = Path(__file__).resolve().parents[2]


def main(argv) -> int:
    return cli.main([str(a) for a in argv])


@pytest.mark.slow
def test_the_readme_eca_plugin_runs_in_the_baseline_ablation_on_the_smoke_preset(tmp_path, capsys):
    (tmp_path / "elsewhere").mkdir()
    plugin = write_eca_plugin(tmp_path / "elsewhere")
    committed = {p: p.read_bytes() for p in (REPO / "notebooks").rglob("*") if p.is_file()}
    runs = tmp_path / "runs"
    args = ["--preset", "smoke", "--runs-dir", runs]

    # without the plugin eca is no variant, and the message says that a plugin's kind needs --plugin
    assert main(["list", "baseline", *args, "--variants", "eca"]) == 2
    assert "a plugin's kind needs --plugin" in capsys.readouterr().err

    assert main(["run", "baseline", *args, "--variants", "eca", "--plugin", plugin]) == 0, capsys.readouterr().err
    capsys.readouterr()
    folders = sorted(p.name for p in (runs / "smoke" / "baseline").iterdir())
    assert folders == ["eca-s0", "none-s0"]
    metrics = {}
    for name in folders:
        d = runs / "smoke" / "baseline" / name
        m = json.loads((d / "metrics.json").read_text())
        assert m["status"] == "finished" and m["epochs_completed"] == 1, m.get("reason")
        nbk = nbformat.read(str(d / "notebook.ipynb"), as_version=4)
        assert not [o for c in nbk.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        metrics[name] = m
    cfg = json.loads((runs / "smoke" / "baseline" / "eca-s0" / "config.json").read_text())
    assert cfg["attention"] == "eca" and cfg["stages"] == [3] and cfg["dataset"] == "fashion_mnist"
    # ECA in the 3 blocks of stage 3 (32 channels at width 0.5: a 3-tap conv each) and nothing else
    assert metrics["eca-s0"]["params"] - metrics["none-s0"]["params"] == 3 * 3

    assert main(["list", "baseline", *args, "--variants", "eca", "--plugin", plugin]) == 0
    assert all(" finished " in line for line in capsys.readouterr().out.strip().splitlines())
    assert {p: p.read_bytes() for p in (REPO / "notebooks").rglob("*") if p.is_file()} == committed
    assert main(["compare", "baseline", "none", "eca", *args, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["n_pairs"] == 1 and row["verdict"] == "no pairs"       # one seed: a delta, no verdict
    assert row["delta"] == pytest.approx(metrics["eca-s0"]["final"]["val_top1"]
                                         - metrics["none-s0"]["final"]["val_top1"])


@pytest.mark.slow
def test_torchrun_children_get_the_plugin_the_command_loaded(tmp_path, monkeypatch):
    """The notebook's multi-process route (``train(..., nproc_per_node=2)`` starts torchrun, whose ranks run
    ``attnrepro train``): the ranks load the plugin from $ATTNREPRO_PLUGINS, which --plugin set in the parent."""
    from attnrepro import registry
    from attnrepro.config import RunConfig
    from attnrepro.pipeline.notebook import train

    registry.use_plugins([write_eca_plugin(tmp_path)])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("ATTNREPRO_OFFLINE", "1")
    cfg = RunConfig.from_dict({"dataset": "synthetic", "model": "resnet20", "width": 0.25, "attention": "aw+eca",
                               "max_steps": 2, "batch_size": 16, "eval_batch_size": 64, "checkpoint": False,
                               "device": "cpu"})
    m = train(cfg, tmp_path / "run", nproc_per_node=2)
    assert m["status"] == "finished" and m["config_hash"] == cfg.hash()
    assert m["config"]["attention"] == "aw+eca"
