"""Meters and facts recorded with every run: top-k counts, peak memory, environment, git commit, and a hash of the
training code (:func:`code_hashes`), so that a report can say whether two runs trained with the same code."""
from __future__ import annotations

import hashlib
import platform
import resource
import subprocess
import sys
from pathlib import Path

import torch

__all__ = ["topk_correct", "peak_memory_mb", "reset_peak_memory", "env_info", "git_commit", "median", "code_hashes",
           "CODE_GROUPS"]


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> list[torch.Tensor]:
    """Number of samples whose target is among the top-k logits, for each k (k capped at the class count)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices  # (B, kmax)
    hit = top == target[:, None]
    return [hit[:, :min(k, kmax)].any(dim=1).sum() for k in ks]


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: ``max_memory_allocated`` (tensors only); CPU: the process's peak resident set size (everything)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2 ** 20 if sys.platform == "darwin" else rss / 2 ** 10


def git_commit() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout holding this package, or (None, None) outside one."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        if out.returncode != 0:
            return None, None
        commit = out.stdout.strip()
        st = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True, timeout=10)
        return commit, (bool(st.stdout.strip()) if st.returncode == 0 else None)
    except (OSError, subprocess.SubprocessError):
        return None, None


#: the parts of the package whose code decides what a run computes: each is hashed on its own (see code_hashes)
CODE_GROUPS = ("config", "data", "models", "modules", "train")


def code_hashes(root: str | Path | None = None) -> dict[str, str]:
    """``{group: hash}`` of the training code, per group of :data:`CODE_GROUPS` (``config`` is ``config.py``, the
    others the ``.py`` files of the sub-package): SHA-256 over each file's path relative to the package and its
    bytes, in path order, cut to 16 hex digits. The same code gives the same hashes on any machine and in any
    clone (git's commit does not: a record may come from uncommitted code). ``root``: the package folder (default:
    this package's)."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[1]
    out = {}
    for group in CODE_GROUPS:
        files = [root / "config.py"] if group == "config" else sorted((root / group).rglob("*.py"))
        h = hashlib.sha256()
        for f in files:
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
        out[group] = h.hexdigest()[:16]
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def env_info(device: torch.device, world_size: int = 1) -> dict:
    """Versions, device and git commit; no hostname or user paths."""
    import torchvision
    commit, dirty = git_commit()
    cuda = device.type == "cuda"
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if cuda else _cpu_name(),
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "num_threads": torch.get_num_threads(),
        "world_size": world_size,
        "platform": platform.platform(),
        "git_commit": commit,
        "git_dirty": dirty,
        "code": code_hashes(),
    }


def median(xs) -> float | None:
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    m = len(xs) // 2
    return float(xs[m]) if len(xs) % 2 else float((xs[m - 1] + xs[m]) / 2)
