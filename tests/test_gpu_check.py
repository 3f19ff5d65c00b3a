"""``make gpu-check``: its CPU dry run (DRY=1) runs every step through the shell script, so the check cannot rot
before a GPU runs it; a failing step is recorded and the others still run; what is missing is said."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnrepro import gpu_check

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_dry_run_runs_every_step_through_the_script(tmp_path):
    env = {**os.environ, "DRY": "1", "PYTHON": sys.executable, "OUT_DIR": str(tmp_path / "gc")}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    res = json.loads((tmp_path / "gc" / "gpu_check.json").read_text())
    steps = res["steps"]
    assert res["dry_run"] and list(steps) == list(gpu_check.STEPS)
    assert {n: s["status"] for n, s in steps.items()} == {n: "ok" for n in gpu_check.STEPS}, \
        {n: s.get("reason") for n, s in steps.items()}
    text = (tmp_path / "gc" / "gpu_check.txt").read_text()
    assert all(f"[ok] {n}" in text for n in gpu_check.STEPS), text
    assert steps["environment"]["torch"] == torch.__version__ and steps["environment"]["device"] == "cpu"
    sdpa = steps["sdpa"]["rows"]
    assert {r["amp"] for r in sdpa} == {"bf16", "none"} and all(r["selected"] and r["ops_ran"] for r in sdpa)
    assert all(r["ms_fwd_bwd"] > 0 for r in sdpa)
    wrn = steps["wrn"]["rows"]
    assert [r["kind"] for r in wrn] == list(gpu_check.WRN_KINDS)
    assert all(r["step_s"] > 0 and r["projected_hours_per_run"] > 0 for r in wrn)
    layers = steps["layers"]["rows"]
    assert len(layers) >= 9 and all(r["ok"] and r["bf16_output_dtype"] == "bfloat16" for r in layers)
    assert "passed" in steps["cuda_tests"]["summary"] or "skipped" in steps["cuda_tests"]["summary"]
    compiled = steps["compile_train"]["rows"]
    assert compiled and all(r["returncode"] == 0 and "finished" in r["summary"] for r in compiled), compiled
    assert all(isinstance(r["graph_breaks"], int) and isinstance(r["recompiles"], int) for r in compiled)
    det = steps["determinism"]["rows"]
    assert det and all(r["identical"] for r in det)


def test_a_failing_step_is_recorded_and_the_others_run(tmp_path, monkeypatch):
    def boom(ctx):
        raise RuntimeError("injected")
    monkeypatch.setitem(gpu_check.STEPS, "layers", boom)
    monkeypatch.setattr(gpu_check.steps, "OPTIONAL", gpu_check.OPTIONAL + ("no_such_package_here",))
    res = gpu_check.check(tmp_path, dry=True, only=["layers", "environment"], say=lambda s: None)
    assert res["steps"]["layers"]["status"] == "failed" and "injected" in res["steps"]["layers"]["reason"]
    env = res["steps"]["environment"]
    assert env["status"] == "ok" and "no_such_package_here" in env["missing"]
    text = (tmp_path / "gpu_check.txt").read_text()
    assert "[failed] layers: RuntimeError: injected" in text and "missing (skipped where needed): " \
        "no_such_package_here" in text
    assert json.loads((tmp_path / "gpu_check.json").read_text())["steps"].keys() == {"layers", "environment"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what happens without a GPU")
def test_without_a_gpu_and_without_dry_the_gpu_steps_are_skipped(tmp_path):
    res = gpu_check.check(tmp_path, dry=False, only=["environment", "sdpa", "wrn"], say=lambda s: None)
    assert res["steps"]["environment"]["status"] == "ok"
    assert {res["steps"][n]["status"] for n in ("sdpa", "wrn")} == {"skipped"}
    assert "no CUDA GPU" in res["steps"]["sdpa"]["reason"]
