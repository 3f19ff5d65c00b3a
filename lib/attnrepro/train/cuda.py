"""Execution switches: device choice, AMP, channels_last, torch.compile, cudnn.benchmark/TF32, DDP.

Each is one :class:`~attnrepro.config.RunConfig` key. On CPU: ``amp='bf16'`` runs under CPU autocast;
``amp='fp16'`` is rejected with a :class:`~attnrepro.config.ConfigError` (fp16 training needs a GradScaler, which
this suite supports on CUDA only); ``channels_last`` and ``compile`` work as on CUDA; ``cudnn_benchmark`` and
``tf32`` do nothing. ``compile`` uses the inductor backend unless ``$ATTNREPRO_COMPILE_BACKEND`` names another
(the tests use ``aot_eager`` to stay fast).

DDP: when started by ``torchrun`` (``WORLD_SIZE > 1``), :func:`init_distributed` joins the process group (NCCL on
CUDA, gloo on CPU) and every rank trains on ``cuda:LOCAL_RANK``; rank 0 alone writes the run folder.
"""
from __future__ import annotations

import contextlib
import os

import torch

from ..config import ConfigError

__all__ = ["resolve_device", "check_amp", "setup_backends", "autocast", "make_scaler", "maybe_compile",
           "init_distributed", "unwrap"]


def init_distributed() -> tuple[int, int, int]:
    """(rank, world_size, local_rank); joins the process group when launched by torchrun with WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), local


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU -> ConfigError."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device='cuda' but no CUDA GPU is available; use device=auto or cpu")
        return torch.device("cuda", local_rank)
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"device={name!r} is not valid; choose one of: auto, cpu, cuda")


def check_amp(amp: str, device: torch.device) -> None:
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("amp='fp16' needs a CUDA device (fp16 training uses a GradScaler); "
                          "on CPU choose one of: bf16, none")
    if amp not in ("none", "bf16", "fp16"):
        raise ConfigError(f"amp={amp!r} is not valid; choose one of: none, bf16, fp16")


def setup_backends(cfg, device: torch.device) -> None:
    """cudnn.benchmark and TF32 (CUDA only; leaves CPU float32 math untouched)."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = bool(cfg.cudnn_benchmark)
    torch.backends.cuda.matmul.allow_tf32 = bool(cfg.tf32)
    torch.backends.cudnn.allow_tf32 = bool(cfg.tf32)


def autocast(amp: str, device: torch.device):
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(amp: str, device: torch.device):
    """A GradScaler for fp16 on CUDA; None otherwise."""
    if amp == "fp16" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def maybe_compile(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    if not enabled:
        return model
    backend = os.environ.get("ATTNREPRO_COMPILE_BACKEND", "inductor")
    return torch.compile(model, backend=backend)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP and torch.compile wrappers (whose state_dict has clean keys)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model
