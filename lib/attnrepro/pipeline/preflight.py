"""Every check made before a notebook starts: the device and AMP mode, the torchrun options against the GPUs each
run gets, the dataset's presence and the model's sizes (built on the meta device). :func:`check_runs` raises one
:class:`~attnrepro.errors.UsageError` (exit code 2) naming every problem and the runs it hits, so nothing starts.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from ..config import ConfigError, RunConfig
from ..errors import UsageError
from .grids import Run

__all__ = ["run_problems", "check_runs", "gpu_count", "gpus_per_job"]


#: run-config keys that do not change the model (the size check builds one model per distinct rest)
_NOT_MODEL_KEYS = frozenset({
    "seed", "epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay", "no_decay_norm_bias",
    "label_smoothing", "schedule", "warmup_epochs", "restart_period", "device", "amp", "channels_last", "compile",
    "cudnn_benchmark", "tf32", "eval_batch_size", "checkpoint", "max_steps", "data_dir", "num_workers",
    "train_subset", "val_split", "augment"})


#: what the in-memory datasets feed a model: (channels, side, classes)
_DATA_SHAPES = {"fashion_mnist": (1, 28, 10), "cifar10": (3, 32, 10), "cifar100": (3, 32, 100),
                "synthetic": (3, 32, 10)}


def gpu_count() -> int:
    vis = os.environ.get("CUDA_VISIBLE_DEVICES")
    if vis is not None:
        return len([d for d in vis.split(",") if d.strip() and d.strip() != "-1"])
    try:
        import torch
        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        return 0


def gpus_per_job(jobs: int) -> int:
    """GPUs one notebook sees: its share when ``--jobs`` splits them (see :func:`_job_envs`), else all."""
    ngpu = gpu_count()
    return ngpu // jobs if jobs > 1 and ngpu >= jobs else ngpu


def _device_problems(cfg: RunConfig, nproc: int, multi_node: bool, gpus: int,
                     remote: bool = False) -> tuple[list[str], Any]:
    """Problems of the device and AMP mode; ``remote``: the run goes to a cluster job with ``gpus`` GPUs per node
    (the device is judged by what the job requests, not by this machine)."""
    import torch
    from ..train.cuda import check_amp, resolve_device
    if remote:
        if cfg.device == "cuda" and gpus < 1:
            return [f"device='cuda' but the cluster section requests gpus_per_node={gpus}; use --cluster "
                    "gpus_per_node 1 (or more), or device=cpu"], None
        device = torch.device("cuda" if cfg.device in ("cuda", "auto") and gpus >= 1 else "cpu")
        gpus = max(gpus, nproc) if device.type == "cpu" else gpus   # DDP on CPU: nproc_per_node processes
    else:
        try:
            device = resolve_device(cfg.device)
        except ConfigError as e:
            return [str(e)], None
    out = []
    try:
        check_amp(cfg.amp, device)
    except ConfigError as e:
        out.append(str(e))
    if remote and device.type == "cuda" and nproc > gpus:
        out.append(f"nproc_per_node={nproc} needs {nproc} GPUs per node, but the cluster section requests "
                   f"gpus_per_node={gpus}; use --cluster gpus_per_node {nproc}")
    elif not remote and device.type == "cuda" and nproc > gpus and not multi_node:
        out.append(f"nproc_per_node={nproc} needs {nproc} GPUs per run, but each run gets {gpus} here; "
                   f"use -p nproc_per_node {max(gpus, 1)}" + (" or fewer --jobs" if gpus < gpu_count() else ""))
    return out, device


def _launch_problems(run: Run) -> tuple[list[str], int, bool]:
    """(problems, nproc_per_node, multi-node) of the notebook options that start torchrun."""
    import shlex
    nproc = run.options.get("nproc_per_node", 1)
    targs = run.options.get("torchrun_args", "") or ""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        return [f"nproc_per_node={nproc!r} is not valid; it must be an integer >= 1"], 1, False
    try:
        extra = shlex.split(str(targs))
    except ValueError as e:
        return [f"torchrun_args={targs!r} cannot be split into arguments ({e})"], nproc, False
    multi_node = any(a.split("=")[0] in ("--nnodes", "--rdzv_endpoint", "--rdzv-endpoint", "--master_addr",
                                         "--master-addr") for a in extra)
    if nproc > 1 or extra:
        import importlib.util
        import torch.distributed
        if not torch.distributed.is_available() or importlib.util.find_spec("torch.distributed.run") is None:
            return [f"nproc_per_node={nproc} needs torchrun (torch.distributed.run), which this torch build lacks; "
                    "use -p nproc_per_node 1"], nproc, multi_node
    return [], nproc, multi_node


def _data_facts(cfg: RunConfig) -> tuple[str | None, tuple[int, int, int] | None]:
    """(problem, (channels, side, classes)) of the dataset; checks presence only (see :func:`attnrepro.data.locate`)."""
    from ..data import DataError, locate
    try:
        where = locate(cfg)
        if cfg.dataset == "imagefolder":
            classes = sum(1 for p in (Path(where) / "train").iterdir() if p.is_dir())
            return None, (3, cfg.image_size, classes)
    except (DataError, ValueError, OSError) as e:
        return str(e), None
    return None, _DATA_SHAPES[cfg.dataset]


def _size_problem(cfg: RunConfig, shape: tuple[int, int, int]) -> str | None:
    """Build the model on the meta device (no memory, no compute) and pass a batch of 2 through it."""
    import torch
    from ..models import model_from_config
    c, side, classes = shape
    what = f"{cfg.model} with attention={cfg.attention!r} on {c}x{side}x{side} inputs"
    try:
        with torch.device("meta"):
            model = model_from_config(cfg, num_classes=classes, in_chans=c, input_size=side)
        with torch.no_grad():
            y = model(torch.empty(2, c, side, side, device="meta"))
    except NotImplementedError:   # an op without a meta kernel: the size cannot be checked here, the run will tell
        return None
    except (ValueError, TypeError, RuntimeError) as e:
        msg = str(e).strip().splitlines()
        return f"{what} cannot be built or run: {msg[-1] if msg else type(e).__name__}"
    if tuple(y.shape) != (2, classes):
        return f"{what} gives outputs of shape {tuple(y.shape)}, not (2, {classes})"
    return None


def run_problems(runs: Sequence[Run], *, jobs: int = 1, gpus: int | None = None) -> dict[str, list[str]]:
    """Every problem that can be found without training, for each run: problem -> the runs it hits.

    Checks the device (``device='cuda'`` without a GPU), the AMP mode on that device, the notebook options that start
    torchrun (``nproc_per_node`` against the GPUs each run gets, torchrun's presence), the dataset (its presence where
    ``data_dir`` says, or the default places; see :func:`attnrepro.data.locate`) and the sizes (the model is built on
    the meta device and given one batch of the dataset's shape). ``gpus``: the GPUs per node each run gets where it
    runs, when that is a cluster job rather than this machine (see :mod:`attnrepro.pipeline.cluster`).
    """
    problems: dict[str, list[str]] = {}
    remote = gpus is not None
    if not remote:
        gpus = gpus_per_job(jobs) if runs else 0
    data_cache: dict[tuple, tuple] = {}
    size_cache: dict[str, str | None] = {}
    for run in runs:
        cfg = run.config
        found, nproc, multi_node = _launch_problems(run)
        dev_found, _ = _device_problems(cfg, nproc, multi_node, gpus, remote)
        found += dev_found
        key = (cfg.dataset, cfg.data_dir, cfg.image_size)
        if key not in data_cache:
            data_cache[key] = _data_facts(cfg)
        data_problem, shape = data_cache[key]
        if data_problem:
            found.append(data_problem)
        if shape is not None:
            mkey = json.dumps([{k: v for k, v in cfg.to_dict().items() if k not in _NOT_MODEL_KEYS}, shape],
                              sort_keys=True, default=str)
            if mkey not in size_cache:
                size_cache[mkey] = _size_problem(cfg, shape)
            if size_cache[mkey]:
                found.append(size_cache[mkey])
        for p in found:
            problems.setdefault(p, []).append(run.name)
    return problems


def check_runs(runs: Sequence[Run], *, jobs: int = 1, gpus: int | None = None) -> None:
    """:func:`run_problems`, raised as one :class:`UsageError` (exit code 2) that names each problem and its runs."""
    problems = run_problems(runs, jobs=jobs, gpus=gpus)
    if not problems:
        return
    hit = {name for names in problems.values() for name in names}

    def names(ns: list[str]) -> str:
        return ", ".join(ns[:3]) + (f" and {len(ns) - 3} more" if len(ns) > 3 else "")
    parts = [f"{p.rstrip('.')} ({'all' if len(ns) == len(runs) > 1 else names(ns)})" for p, ns in problems.items()]
    raise UsageError(f"{len(hit)} of {len(runs)} run(s) cannot start here, so none was started: " + "; ".join(parts))
