"""Many kernels started at once: every one must come up on its first try.

Twelve tiny notebooks (no training: each writes the metrics.json of its config) run with ``--jobs 4``, so four worker
processes start kernels at the same moment, again and again. With TCP each worker picked "free" ports for its kernel
and two could pick the same one (``ZMQError: Address already in use``, then ``Kernel died before replying to
kernel_info``); with the IPC transport in a private folder per kernel they cannot collide. The test also asserts that
no kernel needed the start-up retry, so the retry cannot hide a collision.
"""
from __future__ import annotations

import json

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_notebook

from attnrepro import cli, pipeline

RUNS = 12
JOBS = 4

NOTEBOOK_CODE = """\
import json, os
from attnrepro.config import KEYS, RunConfig
cfg = RunConfig.from_dict({k: globals()[k] for k in KEYS if k in globals()})
with open(os.path.join(out_dir, "metrics.json"), "w") as f:
    json.dump({"status": "finished", "reason": None, "config": cfg.to_dict(), "config_hash": cfg.hash(),
               "final": {"val_top1": 0.0}, "wall_time_s": 0.0}, f)
"""


@pytest.fixture
def stress_nbdir(tmp_path):
    d = tmp_path / "nb"
    (d / "presets").mkdir(parents=True)
    params = new_code_cell("out_dir = 'runs/manual/stress'\nseed = 0", metadata={"tags": ["parameters"]})
    nb = new_notebook(cells=[params, new_code_cell(NOTEBOOK_CODE)],
                      metadata={"kernelspec": {"name": pipeline.KERNEL_NAME, "display_name": pipeline.KERNEL_NAME,
                                               "language": "python"}})
    nbformat.write(nb, str(d / "stress.ipynb"))
    (d / "stress.yaml").write_text(yaml.safe_dump({"reference": "only", "variants": {"only": {}}}))
    (d / "presets" / "many.yaml").write_text(yaml.safe_dump({
        "seeds": list(range(RUNS)),
        "base": {"dataset": "synthetic", "model": "resnet20", "width": 0.25, "heads": 1, "device": "cpu"}}))
    return d


@pytest.mark.slow
def test_many_kernels_started_at_once_all_come_up(stress_nbdir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMANDS", {"run": cli.COMMANDS["run"]})
    runs_dir = tmp_path / "runs"
    rc = cli.main(["run", "stress", "--preset", "many", "--jobs", str(JOBS), "--notebooks-dir", str(stress_nbdir),
                   "--runs-dir", str(runs_dir)])
    err = capsys.readouterr().err
    assert rc == 0, err
    folders = sorted((runs_dir / "many" / "stress").iterdir())
    assert [p.name for p in folders] == sorted(f"only-s{i}" for i in range(RUNS))
    for d in folders:
        m = json.loads((d / "metrics.json").read_text())
        assert m["status"] == "finished", (d.name, m.get("reason"))
        assert "died before it replied" not in (d / "log.txt").read_text(), f"{d.name}: a kernel died at start"
    assert [p for p in runs_dir.rglob("*") if p.name.endswith(".lock")] == []


@pytest.mark.slow
def test_a_taken_tcp_port_cannot_kill_the_kernel(stress_nbdir, tmp_path, monkeypatch):
    """The cause, made certain: every "free" TCP port jupyter_client picks is one another process holds (what a
    worker whose kernel started a moment earlier did). Over TCP this kernel died with `Address already in use`;
    over IPC it uses no TCP port and comes up."""
    import socket

    from jupyter_client.provisioning.local_provisioner import LocalPortCache
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    monkeypatch.setattr(LocalPortCache, "find_available_port", lambda self, ip: port)
    try:
        run = pipeline.expand(["stress"], "many", {}, nb_dir=stress_nbdir, runs_dir=tmp_path / "runs")[0]
        res = pipeline.execute(run)
    finally:
        taken.close()
    assert res["status"] == "finished", res.get("reason")
    assert "died before it replied" not in (run.out_dir / "log.txt").read_text()
