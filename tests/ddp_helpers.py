"""Gloo DDP on CPU for the tests: a script run on N ranks by torchrun (this folder and tests/train on its path)."""
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(tmp_path: Path, body: str, *args: str, nproc: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``body`` (a Python script, dedented) on ``nproc`` gloo ranks with argv ``args``; one intra-op thread."""
    script = tmp_path / f"ddp_{abs(hash(body))}.py"
    script.write_text(f"import sys, torch\ntorch.set_num_threads(1)\n"
                      f"sys.path[:0] = [{str(TESTS)!r}, {str(TESTS / 'train')!r}]\n" + textwrap.dedent(body))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
           "127.0.0.1", "--master_port", str(free_port()), str(script), *args]
    env = {**os.environ, "ATTNREPRO_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
