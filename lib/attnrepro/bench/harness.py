"""The benchmarks' harness: timing interleaved callables (:func:`measure`), peak memory, targets, table rows and
the context every case gets. The method is described in :mod:`attnrepro.bench`."""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn as nn

__all__ = ["COLUMNS", "Measurement", "Settings", "CLOCKS", "measure", "peak_memory_bytes", "Target", "Row",
           "markdown_table", "Ctx"]


# The markdown table's columns (the CSV has these and more).
COLUMNS = ("benchmark", "config", "fast median ms", "reference median ms", "ratio", "peak mem fast/ref",
           "target", "met")


_SLOW_S = 1.0   # a callable slower than this gets one warm-up call and at least 3 (not 5) repeats


@dataclass
class Measurement:
    """Time per call (ms) over repeats, and the peak tensor bytes of one call above its starting point."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    repeats: int
    inner: int
    peak_bytes: float = math.nan

    @property
    def iqr_ms(self) -> float:
        return self.q3_ms - self.q1_ms


@dataclass
class Settings:
    """How hard to measure: warm-up calls, repeat counts and time budgets (seconds)."""

    warmup: int = 2
    min_repeats: int = 5
    max_repeats: int = 25
    budget_s: float = 3.0          # measuring time per callable (after warm-up), repeats clamped to [min, max]
    min_repeat_s: float = 0.02     # a repeat lasts at least this long (several calls for fast callables)
    memory: bool = True
    clock: str = "wall"            # "wall": time.perf_counter; "cpu": time.process_time (CPU only, see CLOCKS)

    @classmethod
    def quick(cls) -> "Settings":
        return cls(warmup=1, min_repeats=1, max_repeats=2, budget_s=0.02, min_repeat_s=0.0)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _quantiles(xs: Sequence[float]) -> tuple[float, float, float]:
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[1], q[0], q[2]


def measure(fns: dict[str, Callable[[], Any]], device: torch.device, settings: Settings) -> dict[str, Measurement]:
    """Time several callables interleaved (round robin per repeat) and measure each one's peak memory.

    Args:
        fns: name -> callable doing one step (e.g. forward + backward); its return value is dropped.
        device: where the callables run (CUDA calls are synchronised around every repeat).
        settings: warm-up and repeat policy.
    """
    if settings.clock not in CLOCKS:
        raise ValueError(f"clock={settings.clock!r} is not valid; choose one of: {', '.join(CLOCKS)}")
    if settings.clock == "cpu" and device.type != "cpu":
        raise ValueError("clock='cpu' (process CPU time) only measures CPU work; use clock='wall' on CUDA")
    clock = CLOCKS[settings.clock]
    est: dict[str, float] = {}
    for name, fn in fns.items():
        for i in range(max(0, settings.warmup - 1)):
            _sync(device)
            t = clock()
            fn()
            _sync(device)
            if clock() - t > _SLOW_S:  # a slow call: one warm-up is plenty
                break
        _sync(device)
        t = clock()
        fn()
        _sync(device)
        est[name] = max(clock() - t, 1e-7)
    inner = {n: max(1, int(math.ceil(settings.min_repeat_s / est[n]))) for n in fns}
    per_repeat = sum(est[n] * inner[n] for n in fns)
    min_repeats = settings.min_repeats if per_repeat < _SLOW_S else min(settings.min_repeats, 3)
    repeats = int(min(settings.max_repeats, max(min_repeats, settings.budget_s * len(fns) // per_repeat)))
    times: dict[str, list[float]] = {n: [] for n in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            t = clock()
            for _ in range(inner[name]):
                fn()
            _sync(device)
            times[name].append((clock() - t) / inner[name] * 1e3)
    out = {}
    for name, fn in fns.items():
        med, q1, q3 = _quantiles(times[name])
        peak = peak_memory_bytes(fn, device) if settings.memory else math.nan
        out[name] = Measurement(med, q1, q3, repeats, inner[name], peak)
    return out


def peak_memory_bytes(fn: Callable[[], Any], device: torch.device) -> float:
    """Peak bytes held by tensors during one call of ``fn``, above what was held when it started (see module doc)."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return float(torch.cuda.max_memory_allocated(device) - base)
    return _cpu_peak_bytes(fn)


def _cpu_peak_bytes(fn: Callable[[], Any]) -> float:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=False) as prof:
        fn()
    try:
        events = prof.profiler.kineto_results.events()
        cpu = torch._C._autograd.DeviceType.CPU
        mem = sorted((e.start_ns(), e.nbytes()) for e in events
                     if e.name() == "[memory]" and e.device_type() == cpu)
    except AttributeError:  # a torch whose profiler result has another shape: fall back on the summary
        mem = sorted((e.time_range.start, e.cpu_memory_usage) for e in prof.events() if e.name == "[memory]")
    cur = peak = 0
    for _, nbytes in mem:
        cur += nbytes
        peak = max(peak, cur)
    return float(peak)


@dataclass
class Target:
    """A condition on ``ratio`` (reference / fast time) and optionally on fast / reference peak memory."""

    text: str
    min_ratio: float | None = None
    max_mem_ratio: float | None = None

    def judge(self, ratio: float, mem_ratio: float) -> str:
        ok = True
        if self.min_ratio is not None:
            if not math.isfinite(ratio):
                return "n.a."
            ok &= ratio >= self.min_ratio
        if self.max_mem_ratio is not None:
            if not math.isfinite(mem_ratio):
                return "n.a."
            ok &= mem_ratio <= self.max_mem_ratio
        return "yes" if ok else "no"


@dataclass
class Row:
    group: str
    benchmark: str
    config: str
    fast: Measurement | None = None
    ref: Measurement | None = None
    target: Target | None = None
    met: str = "n.a."
    note: str = ""

    @property
    def ratio(self) -> float:
        if self.fast is None or self.ref is None:
            return math.nan
        return self.ref.median_ms / self.fast.median_ms

    @property
    def mem_ratio(self) -> float:
        if self.fast is None or self.ref is None or not self.ref.peak_bytes:
            return math.nan
        return self.fast.peak_bytes / self.ref.peak_bytes

    def csv_record(self, device: str, quick: bool) -> dict[str, Any]:
        f, r = self.fast, self.ref
        nan = math.nan
        return {
            "group": self.group, "benchmark": self.benchmark, "config": self.config, "device": device,
            "quick": quick,
            "fast_median_ms": f.median_ms if f else nan, "fast_iqr_ms": f.iqr_ms if f else nan,
            "ref_median_ms": r.median_ms if r else nan, "ref_iqr_ms": r.iqr_ms if r else nan,
            "ratio": self.ratio,
            "fast_peak_mb": f.peak_bytes / 2**20 if f else nan, "ref_peak_mb": r.peak_bytes / 2**20 if r else nan,
            "mem_ratio": self.mem_ratio,
            "repeats": f.repeats if f else 0, "fast_calls_per_repeat": f.inner if f else 0,
            "ref_calls_per_repeat": r.inner if r else 0,
            "target": self.target.text if self.target else "", "met": self.met, "note": self.note,
        }


def _fmt(x: float, digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    return f"{x:.{max(0, digits - 1 - mag)}f}"


def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as a GitHub markdown table with the :data:`COLUMNS`."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        if r.fast is None or not math.isfinite(r.fast.peak_bytes):
            mem = "-"
        else:
            mem = f"{_fmt(r.fast.peak_bytes / 2**20)} / {_fmt(r.ref.peak_bytes / 2**20) if r.ref else '-'} MB"
            if math.isfinite(r.mem_ratio):
                mem += f" ({_fmt(r.mem_ratio, 2)}x)"
        config = r.config + (f"; {r.note}" if r.note else "")
        cells = [r.benchmark, config, _fmt(r.fast.median_ms) if r.fast else "-",
                 _fmt(r.ref.median_ms) if r.ref else "-", _fmt(r.ratio), mem,
                 r.target.text if r.target else "-", r.met]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


@dataclass
class Ctx:
    device: torch.device
    quick: bool
    settings: Settings
    log: Callable[[str], None] = print
    seed: int = 0

    def gen(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def randn(self, *shape: int, requires_grad: bool = False) -> torch.Tensor:
        t = torch.randn(*shape, generator=self.gen()).to(self.device)
        return t.requires_grad_(requires_grad)


def _fwd_bwd(fn: Callable[[], torch.Tensor], leaves: Iterable[torch.Tensor] = (),
             modules: Iterable[nn.Module] = ()) -> Callable[[], None]:
    """A callable doing ``fn()`` forward and a backward with a fixed random output gradient."""
    leaves = [t for t in leaves if t.requires_grad]
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    grad: list[torch.Tensor] = []

    def step() -> None:
        for t in leaves:
            t.grad = None
        for p in params:
            p.grad = None
        out = fn()
        if not grad:
            g = torch.Generator().manual_seed(1)
            grad.append(torch.randn(out.shape, generator=g, dtype=out.dtype).to(out.device))
        out.backward(grad[0])

    return step


def _pair_row(ctx: Ctx, group: str, benchmark: str, config: str, fast: Callable, ref: Callable,
              target: Target | None = None, judge: bool = True, note: str = "") -> Row:
    m = measure({"fast": fast, "ref": ref}, ctx.device, ctx.settings)
    row = Row(group, benchmark, config, m["fast"], m["ref"], target, note=note)
    if target is not None and judge and not ctx.quick:
        row.met = target.judge(row.ratio, row.mem_ratio)
    elif target is not None:
        row.met = "n.a."
        row.note = "; ".join(t for t in (row.note, "quick sizes: target not judged" if ctx.quick else "") if t)
    return row


def _progress(row: Row) -> str:
    f = _fmt(row.fast.median_ms) if row.fast else "-"
    r = _fmt(row.ref.median_ms) if row.ref else "-"
    return f"  {row.benchmark} [{row.config}]: {f} ms vs {r} ms, ratio {_fmt(row.ratio)}, met {row.met}"


def _modules():
    from .. import modules as M  # noqa: N812
    from ..modules import functional as Fm  # noqa: N812
    return M, Fm
