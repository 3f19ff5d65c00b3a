"""DDP on CPU: two gloo ranks under torchrun train one run; rank 0 alone writes the folder."""
import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from attnrepro.train.checkpoint import read_jsonl


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_ranks(tmp_path):
    helpers = Path(__file__).parent
    script = tmp_path / "ddp_run.py"
    script.write_text(textwrap.dedent(f"""
        import sys, torch
        torch.set_num_threads(1)
        sys.path.insert(0, {str(helpers)!r})
        from train_helpers import TINY, tiny_model_fn
        from attnrepro.train import run_training
        run_training(dict(TINY, epochs=2), sys.argv[1], model_fn=tiny_model_fn, verbose=False)
    """))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(script), str(out)]
    env = {"ATTNREPRO_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    import os
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "metrics.json").read_text())
    assert res["status"] == "finished" and res["env"]["world_size"] == 2
    assert res["steps_per_epoch"] == 4  # 128 images, global batch 32: 16 per rank
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]  # written once, by rank 0
