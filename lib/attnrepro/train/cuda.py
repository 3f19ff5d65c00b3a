"""Execution switches: device choice, AMP, channels_last, torch.compile, cudnn.benchmark/TF32, determinism, DDP.

Each is one :class:`~attnrepro.config.RunConfig` key. On CPU: ``amp='bf16'`` runs under CPU autocast;
``amp='fp16'`` is rejected with a :class:`~attnrepro.config.ConfigError` (fp16 training needs a GradScaler, which
this suite supports on CUDA only); ``channels_last`` and ``compile`` work as on CUDA; ``cudnn_benchmark`` and
``tf32`` do nothing. ``compile`` uses the inductor backend unless ``$ATTNREPRO_COMPILE_BACKEND`` names another
(the tests use ``aot_eager`` to stay fast).

``deterministic`` (:func:`backends`): ``torch.use_deterministic_algorithms(True)`` (an op with no deterministic
kernel raises instead of running), ``cudnn.benchmark`` off and ``cudnn.deterministic`` on, and
``CUBLAS_WORKSPACE_CONFIG=:4096:8`` when it is not set (cuBLAS reads it when it starts, so before the first CUDA
matmul of the process; ``attnrepro train`` sets it before any). The switches are restored when the run ends.

DDP: when started by ``torchrun`` (``WORLD_SIZE > 1``), :func:`process_group` joins the process group (NCCL on
CUDA, gloo on CPU), and leaves it when the run ends if it was the one that joined; every rank trains on
``cuda:LOCAL_RANK``; rank 0 alone writes the run folder and prints. ``sync_bn`` converts the batch norms to
``SyncBatchNorm`` under DDP (CUDA only: torch's SyncBatchNorm has no CPU kernel; :func:`check_sync_bn`).
"""
from __future__ import annotations

import contextlib
import os

import torch

from ..config import ConfigError

__all__ = ["resolve_device", "check_amp", "check_sync_bn", "setup_backends", "backends", "autocast", "make_scaler",
           "maybe_compile", "init_distributed", "process_group", "world_size", "convert_sync_bn", "unwrap",
           "CUBLAS_WORKSPACE"]

#: the cuBLAS workspace setting that makes its matmuls deterministic (PyTorch's reproducibility notes)
CUBLAS_WORKSPACE = ":4096:8"


def world_size() -> int:
    """The number of processes torchrun started (``WORLD_SIZE``; 1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


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


@contextlib.contextmanager
def process_group():
    """``(rank, world_size, local_rank)`` for the body; joins the process group as :func:`init_distributed` does,
    and destroys it on exit if this call joined it (a caller that joined it first keeps it)."""
    import torch.distributed as dist
    joins = world_size() > 1 and dist.is_available() and not dist.is_initialized()
    try:
        yield init_distributed()
    finally:
        if joins and dist.is_initialized():
            dist.destroy_process_group()


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


def check_sync_bn(sync_bn: bool, device: torch.device, world: int) -> None:
    if sync_bn and world > 1 and device.type != "cuda":
        raise ConfigError(f"sync_bn=True under DDP needs CUDA devices (torch's SyncBatchNorm has no {device.type} "
                          f"kernel); on {device.type} choose sync_bn=false")


def convert_sync_bn(model: torch.nn.Module, sync_bn: bool, world: int) -> torch.nn.Module:
    """``model`` with its batch norms as ``SyncBatchNorm`` when ``sync_bn`` and there are several processes (the
    same parameters and buffers: a state dict loads either way); else ``model`` itself."""
    if sync_bn and world > 1:
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def setup_backends(cfg, device: torch.device) -> None:
    """cudnn.benchmark and TF32 (CUDA only), and the ``deterministic`` switches; CPU float32 math is untouched
    unless ``deterministic`` is set."""
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.use_deterministic_algorithms(True)
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = bool(cfg.cudnn_benchmark) and not cfg.deterministic
    torch.backends.cudnn.deterministic = bool(cfg.deterministic)
    torch.backends.cuda.matmul.allow_tf32 = bool(cfg.tf32)
    torch.backends.cudnn.allow_tf32 = bool(cfg.tf32)


@contextlib.contextmanager
def backends(cfg, device: torch.device):
    """:func:`setup_backends` for the body; the process-wide switches it changes are restored on exit, so a later
    run in the same process (a notebook kernel, a test) starts from the same state."""
    det = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    cuda = device.type == "cuda"
    if cuda:
        flags = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
                 torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    setup_backends(cfg, device)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(det[0], warn_only=det[1])
        if cuda:
            (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) = flags


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
