"""``attnrepro bench``: what each attention costs, measured side by side in one process.

Every benchmark times a *fast* callable against a *reference* callable on the same inputs:

- layer level (forward + backward): the ExpAtt Gaussian fast path vs its dense-map reference (14, 28, 56 px);
  the ExpAtt layer vs the plain 3x3 conv it replaces; the AA layer (SDPA with a relative-position bias) vs the
  same layer with naive attention (:class:`~.aa.NaiveAAConv2d`, written beside its case around the modules' naive
  ``aa_attention_reference``: explicit ``QK^T`` logits + relative logits + softmax + matmul, every
  ``(B, h, HW, HW)`` tensor materialised); batched AW-convolution vs its per-sample loop; a residual block with
  each gate (SE, CBAM and any gate registered with ``attnrepro.register``) vs without.
- model level (one SGD train step: forward, backward, optimizer step): each attention kind of the registry in
  ResNet-20 (32 px) and ResNet-50 (224 px) vs the plain network; the training loop's data pipeline (the engine's
  tensor-resident batch iterator) vs the model step alone; on CUDA, bf16 autocast + channels_last and ``torch.compile`` on vs off.

Method. All cases run in one process. Each callable is warmed up, then the fast and the reference callables are
timed *interleaved* (repeat by repeat, round robin), so that load from other processes hits both alike; a repeat
runs the callable enough times to last at least a few milliseconds, and the table reports the median time per call
over the repeats (the CSV also has the inter-quartile range). On CUDA every repeat is bracketed by
``torch.cuda.synchronize()``. The clock is the wall clock (``time.perf_counter``), or, with ``--clock cpu`` (the
default when running on CPU with ``--threads 1``), the process's CPU time (``time.process_time``): with one
intra-op thread that is the time the step computed, without the time other processes held the cores, which on a
shared machine makes the medians repeatable where wall-clock medians are not.

Peak memory is the largest number of bytes held by tensors *above what was held when the step started* (inputs,
parameters and anything cached before the step do not count; gradients, activations saved for backward, outputs
and temporaries do), measured in a separate, untimed call:

- CUDA: ``torch.cuda.max_memory_allocated() - torch.cuda.memory_allocated()`` around the call, after
  ``torch.cuda.reset_peak_memory_stats()``.
- CPU: the call runs under ``torch.profiler.profile(profile_memory=True)``; the profiler records every allocation
  and free made through c10's CPU allocator (i.e. every tensor's storage) with its size and time stamp; the peak is
  the maximum of their running sum in time order. Memory that libraries allocate outside c10 (oneDNN scratch pads,
  OpenMP stacks) is not seen, nor is Python-object overhead; the tensors are what the attention variants differ in.

``ratio`` is always ``reference time / fast time`` (above 1: the fast callable is faster); each target is written
as a condition on it (and on the memory ratio ``fast peak / reference peak`` where the target is about memory).
``--quick`` runs every group on tiny sizes with one or two repeats (a smoke test of the harness, not a
measurement); targets are only judged on the full sizes.

The package: :mod:`.harness` (timing, memory, rows), one module per group of cases (:mod:`.expatt`, :mod:`.aa`,
:mod:`.aw`, :mod:`.gates`, :mod:`.train_step`, :mod:`.data`, :mod:`.cuda`), this module (the driver and the output
files) and :mod:`.cli`. This package is the suite's own; the targets are those of the suite's benchmark issue,
not the papers'.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import os
import platform
import time
import traceback
from typing import Callable, Sequence

import torch

from .._io import atomic_write_text
from .aa import NaiveAAConv2d, case_aa_vs_naive
from .aw import case_aw_batched_vs_loop
from .cuda import case_cuda_amp_channels_last, case_cuda_compile
from .data import case_data_loading
from .expatt import case_expatt_fast_vs_dense, case_expatt_vs_conv
from .gates import case_gates
from .harness import CLOCKS, COLUMNS, Ctx, Measurement, Row, Settings, markdown_table, measure, peak_memory_bytes
from .train_step import case_train_step_resnet20, case_train_step_resnet50

__all__ = ["run_benchmarks", "GROUPS", "CASES", "COLUMNS", "Row", "Measurement", "measure", "peak_memory_bytes",
           "NaiveAAConv2d", "resolve_clock", "write_outputs", "markdown_table"]


# Benchmark groups in the order they run; `--only` picks among them.
GROUPS = ("expatt_fast_vs_dense", "expatt_vs_conv", "aa_vs_naive", "aw_batched_vs_loop", "gates",
          "train_step_resnet20", "train_step_resnet50", "data_loading", "cuda_amp_channels_last", "cuda_compile")


CASES: dict[str, Callable[[Ctx], list[Row]]] = {
    "expatt_fast_vs_dense": case_expatt_fast_vs_dense,
    "expatt_vs_conv": case_expatt_vs_conv,
    "aa_vs_naive": case_aa_vs_naive,
    "aw_batched_vs_loop": case_aw_batched_vs_loop,
    "gates": case_gates,
    "train_step_resnet20": case_train_step_resnet20,
    "train_step_resnet50": case_train_step_resnet50,
    "data_loading": case_data_loading,
    "cuda_amp_channels_last": case_cuda_amp_channels_last,
    "cuda_compile": case_cuda_compile,
}


assert tuple(CASES) == GROUPS


def run_benchmarks(device: str | torch.device = "cpu", *, quick: bool = False, out: str | os.PathLike | None = None,
                   only: Sequence[str] | None = None, clock: str = "auto",
                   log: Callable[[str], None] = print) -> list[Row]:
    """Run the benchmark groups (all, or ``only``) on ``device``; write CSV + markdown under ``out`` if given.

    ``clock``: ``wall`` (``time.perf_counter``), ``cpu`` (``time.process_time``: the process's CPU time, which
    on a shared machine leaves out the time other processes hold the cores; only meaningful on CPU with one
    intra-op thread, since it adds up the threads' times) or ``auto``: ``cpu`` when running on CPU with one
    thread (``--threads 1``), else ``wall``.

    A group that raises is recorded as one row with ``met = "error"`` and the exception in its note, and the
    other groups still run.
    """
    device = torch.device(device)
    groups = list(only) if only else list(GROUPS)
    bad = [g for g in groups if g not in CASES]
    if bad:
        raise ValueError(f"unknown benchmark group {bad[0]!r}; choose from: {', '.join(GROUPS)}")
    clock = resolve_clock(clock, device)
    settings = dataclasses.replace(Settings.quick() if quick else Settings(), clock=clock)
    ctx = Ctx(device=device, quick=quick, settings=settings, log=log)
    rows: list[Row] = []
    t0 = time.perf_counter()
    for g in groups:
        log(f"[bench] {g}")
        tg = time.perf_counter()
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                rows.extend(CASES[g](ctx))
        except Exception as e:  # noqa: BLE001 - one broken group must not hide the others
            log(f"  error: {type(e).__name__}: {e}")
            if os.environ.get("ATTNREPRO_BENCH_TRACEBACK"):
                traceback.print_exc()
            rows.append(Row(g, g, "error", met="error", note=f"{type(e).__name__}: {e}".replace("\n", " ")[:300]))
        log(f"  ({time.perf_counter() - tg:.1f} s)")
    elapsed = time.perf_counter() - t0
    if out is not None:
        write_outputs(rows, out, device, quick, elapsed, clock)
    return rows


def resolve_clock(clock: str, device: str | torch.device) -> str:
    """``auto`` -> ``cpu`` on CPU with one intra-op thread, else ``wall``; checks the name (ValueError)."""
    device = torch.device(device)
    if clock not in ("auto",) + tuple(CLOCKS):
        raise ValueError(f"clock={clock!r} is not valid; choose one of: auto, {', '.join(CLOCKS)}")
    if clock == "auto":
        return "cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"
    if clock == "cpu" and device.type != "cpu":
        raise ValueError("clock='cpu' (process CPU time) cannot time CUDA work; use clock='wall' on cuda")
    return clock


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _env_lines(device: torch.device, quick: bool, elapsed: float, clock: str) -> list[str]:
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return [f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
            f"- device: {device.type} ({dev_name}); torch {torch.__version__}; "
            f"{torch.get_num_threads()} intra-op threads; python {platform.python_version()}",
            f"- mode: {'quick (tiny sizes, 1-2 repeats: a smoke test, not a measurement)' if quick else 'full'}; "
            f"wall time {elapsed:.0f} s",
            f"- times: median ms per call (forward + backward, or one SGD step), fast and reference interleaved; "
            f"ratio = reference / fast; clock: "
            + ("process CPU time (time.process_time, 1 thread: leaves out time other processes hold the cores)"
               if clock == "cpu" else "wall (time.perf_counter" + (", cuda synchronised)" if device.type == "cuda"
                                                                  else ")")),
            "- peak mem: peak tensor bytes above the step's start (CUDA: max_memory_allocated; CPU: "
            "torch.profiler allocation events, running sum)",
            "- met: yes/no for a row with a target at full size; n.a.: no target, quick sizes, or not run here"]


def write_outputs(rows: Sequence[Row], out: str | os.PathLike, device: torch.device, quick: bool,
                  elapsed: float, clock: str = "wall") -> None:
    """``bench.csv`` + ``bench_<device>.csv`` and ``bench.md`` + ``bench_<device>.md`` in ``out`` (atomic)."""
    os.makedirs(out, exist_ok=True)
    records = [dict(r.csv_record(device.type, quick), clock=clock, threads=torch.get_num_threads()) for r in rows]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(records[0]) if records else ["group"], lineterminator="\n")
    w.writeheader()
    w.writerows(records)
    md = "\n".join([f"# attnrepro bench ({device.type}{', quick' if quick else ''})", "",
                    *_env_lines(device, quick, elapsed, clock), "", markdown_table(rows), ""])
    for name, text in ((f"bench_{device.type}.csv", buf.getvalue()), ("bench.csv", buf.getvalue()),
                       (f"bench_{device.type}.md", md), ("bench.md", md)):
        atomic_write_text(os.path.join(out, name), text)
