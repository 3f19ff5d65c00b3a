"""Run-folder files written so that a crash never leaves a half-written one.

- :func:`atomic_write_json` / :func:`save_checkpoint`: write a temporary file beside the target, fsync it, then
  ``os.replace`` (atomic on POSIX), so readers see the old file or the new one, never a torn one.
- :func:`append_jsonl`: one JSON object per line, flushed and fsync'd line by line; :func:`read_jsonl` stops at a
  torn last line; :func:`truncate_jsonl` keeps the epochs a checkpoint covers (on resume).
- Checkpoints hold only tensors and plain containers (dict, list, tuple, str, int, float, bool, None), so they load
  with ``torch.load(weights_only=True)``; :func:`rng_state` / :func:`set_rng_state` convert RNG states to that form.
"""
from __future__ import annotations

import json
import math
import os
import random
from typing import Any

import numpy as np
import torch

from .._io import atomic_write, atomic_write_text, read_jsonl

__all__ = ["atomic_write_json", "atomic_write_text", "append_jsonl", "read_jsonl", "truncate_jsonl",
           "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "json_safe"]


def json_safe(obj: Any) -> Any:
    """Replace non-finite floats by None (JSON has no NaN) and tensors/numpy scalars by Python numbers."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(json_safe(obj), indent=1, sort_keys=False) + "\n")


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(json_safe(obj), sort_keys=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def truncate_jsonl(path: str | os.PathLike, max_epoch: int) -> list[dict]:
    """Keep the records with ``epoch <= max_epoch`` (atomically); return them."""
    keep = [r for r in read_jsonl(path) if int(r.get("epoch", 0)) <= max_epoch]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
    return keep


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state() -> dict:
    """Torch (CPU and every CUDA device), Python and numpy RNG states as tensors and plain containers."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [version, list(internal), gauss],
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    if state.get("python"):
        v, internal, gauss = state["python"]
        random.setstate((v, tuple(internal), gauss))
    if state.get("numpy"):
        n = state["numpy"]
        np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
