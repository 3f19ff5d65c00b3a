"""The training loop: one :class:`~attnrepro.config.RunConfig` -> one run folder.

Run folder (``out_dir``; rank 0 writes):

- ``config.json``: ``cfg.to_dict()`` plus ``config_hash``.
- ``metrics.jsonl``: one object per finished epoch (epoch 1-based, train_loss, train_top1, val_loss, val_top1 (None
  on epochs that ``eval_every`` skips),
  val_top5, lr (the rate of the epoch's last step), images_per_s (training images / training seconds),
  epoch_time_s (train + eval), radius {ExpAtt layer: [floats]}), each line fsync'd as it is written.
- ``metrics.json``: the final record (status finished|failed, reason, config, config_hash, env, wall_time_s,
  epochs_completed, final, best_val_top1, params, macs, images_per_s (median over epochs), peak_mem_mb, radius ...),
  written atomically at the end and whenever the run fails.
- ``checkpoint.pt``: model, optimizer, GradScaler, step counter, RNG states, epoch; atomic; loads with
  ``weights_only=True``; written every ``checkpoint_every`` epochs and after the last.

``max_steps`` caps both the training steps and the evaluation batches of every epoch (smoke tests, benchmarks);
the schedule then spans ``epochs * min(batches, max_steps)`` steps.

Accuracies are percentages. Validation loss is the plain cross-entropy (no label smoothing); training loss is the
optimised loss (with label smoothing when set); training accuracy is measured on the augmented batches.

Resume semantics (decided here):

- ``out_dir`` with a ``metrics.json`` of status ``finished`` and the same config hash: nothing is trained; its
  metrics are returned.
- Same config hash and a ``checkpoint.pt``: training continues after the checkpoint's epoch; ``metrics.jsonl``
  is cut back to that epoch (an epoch that was running when the process died is run again, identically: the data
  order of every epoch is a function of ``(seed, epoch)`` and the RNG states are restored).
- A different config hash in ``config.json``: :class:`RunDirConflict` (exit code 2 from the CLI), unless the folder
  holds no finished epoch (no checkpoint, no metrics line), in which case it is started afresh.
  ``data_dir``, ``num_workers`` and ``device`` are not part of the hash: a run may resume on another machine.
- ``checkpoint=False``: no checkpoint is written and an interrupted run starts again from epoch 1.
- ``checkpoint_every N``: a resume starts after the last epoch that wrote one (the epochs after it are run again,
  identically).

DDP (under ``torchrun``): every rank trains; rank 0 alone writes the run folder and prints; each rank returns the
same record (the epochs before a resume are read from ``metrics.jsonl`` on every rank). The process group is left
at the end when :func:`run_training` joined it (:func:`~attnrepro.train.cuda.process_group`).

Failures: any exception writes ``metrics.json`` with status ``failed`` and ``reason`` and is re-raised; a
non-finite training loss raises :class:`NonFiniteLoss` (reason ``"non-finite loss at epoch E step S"``; S is
0-based within the epoch). The checkpoint of the last good epoch is kept, so the run can be resumed.
"""
from __future__ import annotations

import math
import os
import random
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import _NOT_HASHED, ConfigError, RunConfig
from ..errors import UsageError
from . import checkpoint as ckpt
from .cuda import (autocast, backends, check_amp, check_sync_bn, convert_sync_bn, make_scaler, maybe_compile,
                   process_group, resolve_device, unwrap, world_size)
from .metrics import env_info, median, peak_memory_mb, reset_peak_memory, topk_correct
from .schedules import make_schedule

__all__ = ["run_training", "preflight", "NonFiniteLoss", "RunDirConflict", "param_groups", "ModelFn"]

ModelFn = Callable[[RunConfig, int, int, int], nn.Module]

CONFIG, METRICS_JSONL, METRICS, CHECKPOINT = "config.json", "metrics.jsonl", "metrics.json", "checkpoint.pt"
_NAN_CHECK_EVERY = 50  # steps between host checks of the on-device non-finite flag (CUDA; CPU checks every step)


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch and step."""


class RunDirConflict(UsageError):
    """``out_dir`` already holds epochs of a run with a different config."""


def _as_config(cfg: RunConfig | Mapping[str, Any]) -> RunConfig:
    if isinstance(cfg, RunConfig):
        cfg.validate()
        return cfg
    return RunConfig.from_dict(dict(cfg))


def preflight(cfg: RunConfig, out_dir: str | os.PathLike | None = None) -> torch.device:
    """Every check that needs no model and no data read: device, AMP mode, ``sync_bn`` against the device and the
    processes, dataset presence, run-folder conflict.

    Returns the device. Raises ConfigError / DataNotFoundError / RunDirConflict.
    """
    from ..data import locate
    device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    check_amp(cfg.amp, device)
    check_sync_bn(cfg.sync_bn, device, world_size())
    locate(cfg)
    if out_dir is not None:
        _folder_state(cfg, Path(out_dir))
    return device


def _folder_state(cfg: RunConfig, out: Path) -> str:
    """'fresh' | 'finished' | 'resume'; raises RunDirConflict for another config's epochs."""
    h = cfg.hash()
    if out.exists() and not out.is_dir():
        raise RunDirConflict(f"{out} is a file, not a run folder")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunDirConflict(f"{out}: cannot write in {parent} (permission denied)")
    conf = out / CONFIG
    if not conf.is_file():
        return "fresh"
    import json
    try:
        old = json.loads(conf.read_text())
        old_hash = old.get("config_hash")
    except (OSError, ValueError):
        old, old_hash = {}, None
    has_epochs = (out / CHECKPOINT).is_file() or bool(ckpt.read_jsonl(out / METRICS_JSONL))
    if old_hash != h:
        if has_epochs:
            new = cfg.to_dict()
            skip = _NOT_HASHED | {"config_hash"}
            diff = sorted(k for k in set(old) | set(new) if k not in skip and old.get(k) != new.get(k))
            raise RunDirConflict(f"{out} holds another run (config hash {old_hash}, this config {h}; differing keys: "
                                 f"{', '.join(diff) or '?'}); choose another --out or delete that folder")
        return "fresh"
    m = out / METRICS
    if m.is_file():
        try:
            done = json.loads(m.read_text())
            if done.get("status") == "finished" and done.get("config_hash") == h:
                return "finished"
        except (OSError, ValueError):
            pass
    return "resume" if has_epochs else "fresh"


def param_groups(model: nn.Module, weight_decay: float, no_decay_norm_bias: bool) -> list[dict]:
    """SGD parameter groups. With ``no_decay_norm_bias`` every parameter with at most one dimension (biases, norm
    scales and shifts, ExpAtt radii) goes in a group without weight decay."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not no_decay_norm_bias:
        return [{"params": [p for _, p in params], "weight_decay": weight_decay}]
    decay = [p for n, p in params if p.ndim > 1]
    rest = [p for n, p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    return groups


def _default_model_fn(cfg: RunConfig, num_classes: int, in_chans: int, input_size: int) -> nn.Module:
    from ..models import model_from_config
    return model_from_config(cfg, num_classes=num_classes, in_chans=in_chans, input_size=input_size)


def _radii(model: nn.Module) -> dict[str, list[float]]:
    try:
        from ..models import radii
        r = radii(model)
    except ImportError:  # no attention library: there can be no ExpAtt layer either
        return {}
    return {k: [float(x) for x in v] for k, v in r.items()}


def _macs(model: nn.Module, shape: tuple[int, ...], say: bool = True) -> int | None:
    was_training = model.training
    try:
        from ..flops import count_macs
        return int(count_macs(model, input_size=shape))
    except Exception as e:  # counting is a report fact, never a reason to lose a run
        if say:
            print(f"attnrepro train: could not count MACs ({type(e).__name__}: {e})", flush=True)
        return None
    finally:
        model.train(was_training)


def _allreduce(t: torch.Tensor) -> torch.Tensor:
    d = torch.distributed
    if d.is_available() and d.is_initialized() and d.get_world_size() > 1:
        d.all_reduce(t)
    return t


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _progress_bar(total: int, desc: str, progress: bool | None, main: bool):
    from tqdm import tqdm
    disable = True if (not main or progress is False) else (None if progress is None else False)
    return tqdm(total=total, desc=desc, leave=False, disable=disable, dynamic_ncols=True)


class _Progress:
    """What the run has done so far; turned into metrics.json by :meth:`summary` (on success and on failure)."""

    def __init__(self, record: dict, t_start: float, device: torch.device):
        self.record, self.t_start, self.device = record, t_start, device
        self.history: list[dict] = []
        self.best: float | None = None
        self.prior_wall = 0.0
        self.prior_peak = 0.0
        self.model: nn.Module | None = None

    def wall(self) -> float:
        return self.prior_wall + (time.perf_counter() - self.t_start)

    def peak(self) -> float:
        return max(self.prior_peak, peak_memory_mb(self.device))

    def summary(self, status: str) -> dict:
        last = self.history[-1] if self.history else {}
        self.record.update(
            status=status,
            wall_time_s=self.wall(),
            epochs_completed=len(self.history),
            final={k: last.get(k) for k in ("val_top1", "val_top5", "val_loss", "train_loss", "train_top1")},
            best_val_top1=self.best,
            images_per_s=median(r.get("images_per_s") for r in self.history),
            peak_mem_mb=self.peak(),
            radius=_radii(self.model) if self.model is not None else {},
            finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        return self.record


def run_training(cfg: RunConfig | Mapping[str, Any], out_dir: str | os.PathLike, *, progress: bool | None = None,
                 model_fn: ModelFn | None = None, step_hook: Callable[[int, int], None] | None = None,
                 verbose: bool = True) -> dict:
    """Train ``cfg`` into ``out_dir`` (created; resumed when it holds this config's checkpoint).

    Args:
        cfg: a RunConfig or a mapping of run-config keys.
        out_dir: the run folder (see the module docstring for its files).
        progress: tqdm bars: None shows them only on a terminal, True always, False never.
        model_fn: ``(cfg, num_classes, in_chans, input_size) -> nn.Module``; default
            ``attnrepro.models.model_from_config``.
        step_hook: called as ``step_hook(epoch, step)`` after every optimiser step (epoch 1-based, step 0-based
            within the epoch); tests use it to interrupt a run.
        verbose: print one line per epoch (rank 0).

    Returns:
        The content of ``metrics.json``.
    """
    t_start = time.perf_counter()
    cfg = _as_config(cfg)
    with process_group() as (rank, world, _):
        return _run(cfg, Path(out_dir), rank, world, t_start, progress=progress, model_fn=model_fn,
                    step_hook=step_hook, verbose=verbose)


def _run(cfg: RunConfig, out: Path, rank: int, world: int, t_start: float, *, progress, model_fn, step_hook,
         verbose: bool) -> dict:
    main = rank == 0
    device = preflight(cfg, None)
    state = _folder_state(cfg, out)
    if state == "finished":
        import json
        if verbose and main:
            print(f"attnrepro train: {out} already holds this finished run; nothing to do", flush=True)
        return json.loads((out / METRICS).read_text())
    if main:
        out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"status": "running", "reason": None, "config": cfg.to_dict(),
                              "config_hash": cfg.hash(), "env": env_info(device, world),
                              "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    run = _Progress(record, t_start, device)
    try:
        return _train(cfg, out, device, rank, world, state, run, progress=progress,
                      model_fn=model_fn or _default_model_fn, step_hook=step_hook, verbose=verbose and main)
    except BaseException as e:
        try:
            run.summary("failed")
        except Exception:
            record["status"] = "failed"
        if isinstance(e, NonFiniteLoss):
            record["reason"] = str(e)
        elif isinstance(e, KeyboardInterrupt):
            record["reason"] = "interrupted (KeyboardInterrupt)"
        else:
            record["reason"] = f"{type(e).__name__}: {e}"
        if main:
            try:
                ckpt.atomic_write_json(out / METRICS, record)
            except Exception:
                pass
        raise


def _train(cfg: RunConfig, out: Path, device: torch.device, rank: int, world: int, state: str, run: _Progress,
           *, progress, model_fn: ModelFn, step_hook, verbose: bool) -> dict:
    with backends(cfg, device):
        return _train_run(cfg, out, device, rank, world, state, run, progress=progress, model_fn=model_fn,
                          step_hook=step_hook, verbose=verbose)


def _train_run(cfg: RunConfig, out: Path, device: torch.device, rank: int, world: int, state: str, run: _Progress,
               *, progress, model_fn: ModelFn, step_hook, verbose: bool) -> dict:
    from ..data import load
    main = rank == 0
    record = run.record
    if main:
        ckpt.atomic_write_json(out / CONFIG, {**cfg.to_dict(), "config_hash": cfg.hash()})

    data = load(cfg, device, rank=rank, world_size=world)
    record.update(train_len=data.train_len, val_len=data.val_len, data_source=data.source,
                  num_classes=data.num_classes, input_size=data.input_size)

    # model (seeded), its size, optimiser
    torch.manual_seed(cfg.run_seed)
    random.seed(cfg.run_seed)
    np.random.seed(cfg.run_seed % 2 ** 32)
    model = model_fn(cfg, data.num_classes, data.in_chans, data.input_size)
    record["params"] = int(sum(p.numel() for p in model.parameters()))
    record["macs"] = _macs(model, (1, data.in_chans, data.input_size, data.input_size), say=main)
    model = convert_sync_bn(model, cfg.sync_bn, world)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(param_groups(model, cfg.weight_decay, cfg.no_decay_norm_bias), lr=cfg.lr,
                                momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    scaler = make_scaler(cfg.amp, device)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    steps_per_epoch = len(data.train)
    schedule = make_schedule(cfg, steps_per_epoch)
    record["steps_per_epoch"] = steps_per_epoch

    # resume
    start_epoch = 0
    if state == "resume" and cfg.checkpoint and (out / CHECKPOINT).is_file():
        c = ckpt.load_checkpoint(out / CHECKPOINT)
        if c.get("config_hash") != cfg.hash():
            raise RunDirConflict(f"{out / CHECKPOINT} belongs to config {c.get('config_hash')}, not {cfg.hash()}")
        model.load_state_dict(c["model"])
        optimizer.load_state_dict(c["optimizer"])
        if scaler is not None and c.get("scaler"):
            scaler.load_state_dict(c["scaler"])
        ckpt.set_rng_state(c["rng"])
        start_epoch, run.best = int(c["epoch"]), c.get("best_val_top1")
        run.prior_wall, run.prior_peak = float(c.get("wall_time_s", 0.0)), float(c.get("peak_mem_mb", 0.0))
        record["resumed_from_epoch"] = start_epoch
        if verbose:
            print(f"attnrepro train: resuming {out} after epoch {start_epoch}", flush=True)
    if main:
        run.history = ckpt.truncate_jsonl(out / METRICS_JSONL, start_epoch)
    else:   # the same history as rank 0 (whose truncation, atomic, keeps these same lines)
        run.history = [r for r in ckpt.read_jsonl(out / METRICS_JSONL) if int(r.get("epoch", 0)) <= start_epoch]
    run.model = model

    fwd = model
    if world > 1:
        fwd = nn.parallel.DistributedDataParallel(fwd, device_ids=[device.index] if device.type == "cuda" else None)
    fwd = maybe_compile(fwd, cfg.compile)
    reset_peak_memory(device)

    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        tr = _train_epoch(fwd, data.train, epoch, steps_per_epoch, optimizer, scaler, criterion, schedule, cfg,
                          device, progress, main, step_hook)
        t_train = time.perf_counter() - t0
        evaluated = epoch % cfg.eval_every == 0 or epoch == cfg.epochs
        va = (_evaluate(fwd, data.val, cfg, device, progress, main) if evaluated
              else {"loss": None, "top1": None, "top5": None})
        row = {"epoch": epoch, "train_loss": tr["loss"], "train_top1": tr["top1"], "val_loss": va["loss"],
               "val_top1": va["top1"], "val_top5": va["top5"], "lr": tr["lr"],
               "images_per_s": tr["images"] / t_train if t_train > 0 else None,
               "epoch_time_s": time.perf_counter() - t0, "radius": _radii(model)}
        if evaluated:
            run.best = row["val_top1"] if run.best is None else max(run.best, row["val_top1"])
        run.history.append(row)
        if main:
            ckpt.append_jsonl(out / METRICS_JSONL, row)
            if cfg.checkpoint and (epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs):
                ckpt.save_checkpoint(out / CHECKPOINT, {
                    "epoch": epoch, "config_hash": cfg.hash(), "model": unwrap(model).state_dict(),
                    "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                    "scheduler": {"step": epoch * steps_per_epoch, "steps_per_epoch": steps_per_epoch},
                    "rng": ckpt.rng_state(), "best_val_top1": run.best,
                    "wall_time_s": run.wall(), "peak_mem_mb": run.peak()})
        if verbose:
            val = (f"val_loss {row['val_loss']:.4f}  val_top1 {row['val_top1']:.2f}" if evaluated
                   else "(no evaluation this epoch)")
            print(f"epoch {epoch}/{cfg.epochs}  train_loss {row['train_loss']:.4f}  train_top1 {row['train_top1']:.2f}"
                  f"  {val}  lr {row['lr']:.4g}  {row['images_per_s'] or 0:.0f} img/s  {row['epoch_time_s']:.1f}s",
                  flush=True)

    result = run.summary("finished")
    if main:
        ckpt.atomic_write_json(out / METRICS, result)
    return ckpt.json_safe(result)


def _train_epoch(model, loader, epoch: int, steps_per_epoch: int, optimizer, scaler, criterion, schedule, cfg,
                 device: torch.device, progress, main: bool, step_hook) -> dict:
    model.train()
    loader.set_epoch(epoch)
    base = (epoch - 1) * steps_per_epoch
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    count = 0
    first_bad = torch.full((), -1, device=device, dtype=torch.int64)
    check_every = 1 if device.type == "cpu" else _NAN_CHECK_EVERY
    lr = schedule(base)
    bar = _progress_bar(steps_per_epoch, f"epoch {epoch}/{cfg.epochs}", progress, main)

    def check() -> None:
        s = int(first_bad.item())
        if s >= 0:
            raise NonFiniteLoss(f"non-finite loss at epoch {epoch} step {s}")

    try:
        for step, (x, y) in enumerate(loader):
            lr = schedule(base + step)
            for g in optimizer.param_groups:
                g["lr"] = lr
            with autocast(cfg.amp, device):
                logits = model(x)
                loss = criterion(logits, y)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            ld = loss.detach()
            bad = ~torch.isfinite(ld)
            first_bad = torch.where(bad & (first_bad < 0), torch.full_like(first_bad, step), first_bad)
            loss_sum += ld.double() * y.shape[0]
            correct += (logits.detach().argmax(1) == y).sum()
            count += y.shape[0]
            if (step + 1) % check_every == 0:
                check()
            bar.update(1)
            if not bar.disable and (step + 1) % 20 == 0:
                bar.set_postfix(loss=f"{(loss_sum / max(count, 1)).item():.3f}", lr=f"{lr:.3g}")
            if step_hook is not None:
                step_hook(epoch, step)
        check()
        _sync(device)
    finally:
        bar.close()
    stats = _allreduce(torch.stack([loss_sum, correct.double(), torch.tensor(float(count), device=device,
                                                                            dtype=torch.float64)]))
    n = max(1.0, float(stats[2]))
    return {"loss": float(stats[0]) / n, "top1": 100.0 * float(stats[1]) / n, "images": float(stats[2]), "lr": lr}


@torch.no_grad()
def _evaluate(model, loader, cfg, device: torch.device, progress, main: bool) -> dict:
    model.eval()
    sums = torch.zeros(3, device=device, dtype=torch.float64)  # loss, top1, top5
    count = 0
    bar = _progress_bar(len(loader), "eval", progress, main)
    try:
        for x, y in loader:
            with autocast(cfg.amp, device):
                logits = model(x)
            logits = logits.float()
            t1, t5 = topk_correct(logits, y, (1, 5))
            sums += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(), t1.double(), t5.double()])
            count += y.shape[0]
            bar.update(1)
    finally:
        bar.close()
    sums = _allreduce(torch.cat([sums, torch.tensor([float(count)], device=device, dtype=torch.float64)]))
    n = max(1.0, float(sums[3]))
    loss = float(sums[0]) / n
    return {"loss": loss if math.isfinite(loss) else float("nan"), "top1": 100.0 * float(sums[1]) / n,
            "top5": 100.0 * float(sums[2]) / n}
