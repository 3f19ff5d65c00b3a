"""``make gpu-check`` (``scripts/gpu_check.sh``, ``attnrepro gpu-check``): what a GPU machine does with this suite,
in one command of a few minutes, with the machine's own Python and torch (no venv, no network; ``PYTHONPATH=lib``).

Steps, in order (each one's result, or its failure or the reason it was skipped, goes into one JSON file, and a
line of it into a short text summary; a failing step does not stop the others):

- ``environment``: Python, torch, torchvision, CUDA, cuDNN, the GPU, and which optional packages are there (what
  is missing, fvcore or papermill say, is named, and what needs it is skipped or done without it);
- ``sdpa``: the scaled-dot-product-attention kernel AA actually gets at its real shapes (every distinct AA layer of
  WRN-28-10 at the ``cifar100`` preset's batch), in bf16 autocast and in fp32: the backend torch selects
  (``torch._fused_sdp_choice``), the attention ops that ran (profiler), head sizes, ms per forward + backward and
  peak memory;
- ``layers``: every layer kind (ExpAtt with each kernel, AA, AW, SE, CBAM) on CUDA against the CPU in fp32 (TF32
  off), and bf16 autocast against fp32 on CUDA: output dtype, largest relative errors of outputs and gradients;
- ``wrn``: WRN-28-10 with each kind at the ``cifar100`` preset's batch, bf16 + channels_last: step time, train
  peak memory, eval peak at the preset's ``eval_batch_size`` (an out-of-memory is caught and reported), and the
  hours the preset would take per run at that speed;
- ``cuda_tests``: the suite's CUDA-marked tests (pytest; skipped when pytest is missing);
- ``compile_train``: 20 steps of ``attnrepro train`` on synthetic data with bf16, channels_last and
  ``compile`` for a few kinds, with torch's logs of graph breaks and recompiles counted;
- ``determinism``: two runs with ``deterministic`` (fresh processes) give the same numbers and weights; a third
  without it gives the cost.

``--dry-run`` (``DRY=1``) runs every step on the CPU at tiny sizes (a smoke test of this module: the test suite runs
it, so that the check cannot rot); its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

__all__ = ["STEPS", "OPTIONAL", "main", "configure", "run", "check", "summary_lines"]

ROOT = Path(__file__).resolve().parents[2]
#: packages the suite uses beyond torch: missing ones are reported, and what needs them is skipped
OPTIONAL = ("fvcore", "papermill", "nbformat", "pytest", "tqdm", "pandas", "scipy", "matplotlib", "seaborn",
            "yaml", "filelock", "numpy")
#: CIFAR-100's split sizes (for the projected hours of the cifar100 preset)
CIFAR100_TRAIN, CIFAR100_TEST = 50_000, 10_000
#: the kinds timed on WRN-28-10 (every single kind and the AW paper's combinations)
WRN_KINDS = ("none", "expatt", "aa", "aw", "se", "cbam", "aw+se", "aw+cbam")
#: the kinds of the compiled 20-step runs (name -> extra -p keys)
COMPILE_KINDS = {"expatt-laplacian": {"attention": "expatt", "kernel": "laplacian"}, "aa": {"attention": "aa"},
                 "aw+se": {"attention": "aw+se"}}
DETERMINISM_KINDS = {"none": {}, "expatt-cauchy": {"attention": "expatt", "kernel": "cauchy"},
                     "aa": {"attention": "aa"}, "aw": {"attention": "aw"}}


# ---------------------------------------------------------------------------------------------------- context
class Ctx:
    """The device and the sizes of one check (``dry``: CPU, tiny)."""

    def __init__(self, dry: bool, out: Path):
        import torch
        self.dry, self.out = dry, out
        self.device = torch.device("cpu" if dry or not torch.cuda.is_available() else "cuda")
        preset = _cifar100_preset()
        self.preset = preset
        self.model = "resnet20" if dry else preset["model"]
        self.width = 0.25 if dry else float(preset.get("width", 1.0))
        self.batch = 4 if dry else int(preset["batch_size"])
        self.eval_batch = 8 if dry else int(preset["eval_batch_size"])
        self.warmup, self.repeats = (1, 2) if dry else (3, 10)
        self.steps = 2 if dry else 20

    def sync(self) -> None:
        import torch
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        import torch
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self, base: int = 0) -> float | None:
        import torch
        if self.device.type != "cuda":
            return None
        return (torch.cuda.max_memory_allocated(self.device) - base) / 2 ** 30

    def env(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "lib"), os.environ.get("PYTHONPATH", "")]),
               "ATTNREPRO_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        if self.dry:
            env.update(CUDA_VISIBLE_DEVICES="", ATTNREPRO_COMPILE_BACKEND="eager", OMP_NUM_THREADS="1")
        return env

    def device_key(self) -> str:
        return "cpu" if self.device.type == "cpu" else "cuda"


def _cifar100_preset() -> dict:
    """The ``cifar100`` preset's base, with RunConfig's defaults for what it does not set."""
    from .config import RunConfig
    path = ROOT / "notebooks" / "presets" / "cifar100.yaml"
    base: dict = {}
    if path.is_file():
        import yaml
        base = (yaml.safe_load(path.read_text()) or {}).get("base", {})
    return RunConfig.from_dict(base).to_dict()


def _skip(reason: str) -> dict:
    return {"status": "skipped", "reason": reason}


def _timed(ctx: Ctx, fn: Callable[[], Any]) -> float:
    """Median seconds of ``fn`` over the repeats, after the warm-up (synchronised on CUDA)."""
    for _ in range(ctx.warmup):
        fn()
    ctx.sync()
    times = []
    for _ in range(ctx.repeats):
        t0 = time.perf_counter()
        fn()
        ctx.sync()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


# ---------------------------------------------------------------------------------------------------- steps
def step_environment(ctx: Ctx) -> dict:
    import torch
    import torchvision
    out: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable,
                           "torch": torch.__version__, "torchvision": torchvision.__version__,
                           "cuda_available": torch.cuda.is_available(), "device": ctx.device.type,
                           "dry_run": ctx.dry, "platform": platform.platform()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), gpus=torch.cuda.device_count(),
                   gpu=p.name, gpu_memory_gib=round(p.total_memory / 2 ** 30, 1),
                   capability=f"{p.major}.{p.minor}")
    have, missing = {}, []
    for name in OPTIONAL:
        if importlib.util.find_spec(name) is None:
            missing.append(name)
            continue
        dist = {"yaml": "PyYAML"}.get(name, name)
        try:
            have[name] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            have[name] = "?"
    out.update(packages=have, missing=missing, status="ok")
    from .train.metrics import git_commit
    out["git_commit"], out["git_dirty"] = git_commit()
    return out


def _aa_shapes(ctx: Ctx) -> list[dict]:
    """The distinct AA layers of the model (in, out, stride, input side), found by a forward of 2 images."""
    import torch
    from .models import build_model
    from .modules import AAConv2d
    model = build_model(ctx.model, 100, attention="aa", width=ctx.width, input_size=32)
    seen: dict[tuple, dict] = {}

    def hook(m, inputs, _out):
        x = inputs[0]
        key = (m.in_channels, m.out_channels, m.stride, x.shape[-2], x.shape[-1])
        seen.setdefault(key, {"layer": m, "shape": tuple(x.shape[1:])})
    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, AAConv2d)]
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    return list(seen.values())


_SDPA_OPS = re.compile(r"(flash|efficient|cudnn)_attention|_scaled_dot_product|attention_math")


@contextlib.contextmanager
def _record_sdpa_choice(record: list):
    """Wrap ``F.scaled_dot_product_attention`` to record the backend torch selects for each call."""
    import torch
    import torch.nn.functional as F
    original = F.scaled_dot_product_attention

    def wrapper(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        entry = {"q": list(q.shape), "dtype": str(q.dtype).replace("torch.", ""),
                 "mask": None if attn_mask is None else str(attn_mask.dtype).replace("torch.", "")}
        try:
            choice = int(torch._fused_sdp_choice(q, k, v, attn_mask, dropout_p, is_causal, scale))
            try:
                entry["selected"] = torch.nn.attention.SDPBackend(choice).name
            except (ValueError, AttributeError):
                entry["selected"] = str(choice)
        except Exception as e:  # noqa: BLE001 - an older torch without the query
            entry["selected"] = f"unknown ({type(e).__name__})"
        record.append(entry)
        return original(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **kw)
    F.scaled_dot_product_attention = wrapper
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def step_sdpa(ctx: Ctx) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from .train.cuda import autocast
    rows = []
    for entry in _aa_shapes(ctx):
        layer = entry["layer"].to(ctx.device)
        x = torch.randn(ctx.batch, *entry["shape"], device=ctx.device)
        for amp in ("bf16", "none"):
            def step():
                with autocast(amp, ctx.device):
                    out = layer(x)
                out.float().mean().backward()
            layer.zero_grad(set_to_none=True)
            calls: list = []
            with _record_sdpa_choice(calls), profile(activities=[ProfilerActivity.CPU]) as prof:
                step()
            ran = sorted({e.key for e in prof.key_averages() if _SDPA_OPS.search(e.key)})
            ctx.reset_peak()
            base = torch.cuda.memory_allocated(ctx.device) if ctx.device.type == "cuda" else 0
            ms = 1000 * _timed(ctx, step)
            rows.append({"layer": f"{layer.in_channels}->{layer.out_channels} s{layer.stride}",
                         "input": [ctx.batch, *entry["shape"]], "amp": amp, "heads": layer.heads,
                         "dkh": layer.dkh, "dvh": layer.dv // layer.heads,
                         "sdpa_head_size": calls[0]["q"][-1] if calls else None,
                         "selected": calls[0]["selected"] if calls else None,
                         "sdpa_dtype": calls[0]["dtype"] if calls else None, "ops_ran": ran,
                         "ms_fwd_bwd": round(ms, 3), "peak_gib": ctx.peak_gib(base)})
        layer.to("cpu")
    math_16 = [r["layer"] for r in rows if r["amp"] == "bf16" and "MATH" in str(r["selected"])]
    return {"status": "ok", "rows": rows, "bf16_math_fallbacks": math_16}


def _layer_cases():
    from .modules import AAConv2d, AWConv2d, CBAM, ExpAttConv2d, SqueezeExcite
    from .modules.functional import KERNELS
    cases = {f"expatt-{k}": (lambda k=k: ExpAttConv2d(32, 64, heads=4, upsilon=0.25, kernel=k), 32) for k in KERNELS}
    cases["expatt-per-head"] = (lambda: ExpAttConv2d(32, 64, heads=4, upsilon=0.25, radius_per_head=True), 32)
    cases["aa"] = (lambda: AAConv2d(32, 64, heads=4, max_size=16), 32)
    cases["aw"] = (lambda: AWConv2d(32, 64), 32)
    cases["se"] = (lambda: SqueezeExcite(64), 64)
    cases["cbam"] = (lambda: CBAM(64), 64)
    return cases


def _rel(a, b) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def step_layers(ctx: Ctx) -> dict:
    import torch
    rows, bad = [], []
    dev = ctx.device
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        for name, (make, c_in) in _layer_cases().items():
            torch.manual_seed(0)
            ref_layer = make()
            x = torch.randn(8, c_in, 16, 16)
            g = torch.randn_like(ref_layer(x))

            def run(layer, x, amp):
                # under autocast a block feeds the layer bf16 (a conv's output), so the bf16 run gets bf16
                x = (x.bfloat16() if amp else x.clone()).requires_grad_(True)
                with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
                    out = layer(x)
                (gx,) = torch.autograd.grad(out.float(), [x], g.to(x.device))
                return out, gx
            cpu_out, cpu_gx = run(ref_layer, x, False)
            layer = make()
            layer.load_state_dict(ref_layer.state_dict())
            layer.to(dev)
            dev_out, dev_gx = run(layer, x.to(dev), False)
            low_out, low_gx = run(layer, x.to(dev), True)
            row = {"layer": name, "device_vs_cpu_fp32": {"out": _rel(dev_out.cpu(), cpu_out),
                                                         "grad": _rel(dev_gx.cpu(), cpu_gx)},
                   "bf16_vs_fp32": {"out": _rel(low_out, dev_out), "grad": _rel(low_gx, dev_gx)},
                   "bf16_output_dtype": str(low_out.dtype).replace("torch.", "")}
            # bf16 judged on the output: a gradient through a max (CBAM's) can take another element when bf16
            # rounding flips the arg-max, so its relative error is reported, not judged
            row["ok"] = (max(row["device_vs_cpu_fp32"].values()) < 1e-4 and row["bf16_vs_fp32"]["out"] < 0.05
                         and row["bf16_output_dtype"] == "bfloat16")
            rows.append(row)
            if not row["ok"]:
                bad.append(name)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return {"status": "failed" if bad else "ok", "rows": rows,
            **({"reason": f"out of tolerance: {', '.join(bad)} (fp32 CUDA vs CPU < 1e-4 in output and input "
                          f"gradient; bf16 output within 5e-2 of fp32, and bf16)"} if bad else {})}


def step_wrn(ctx: Ctx) -> dict:
    import torch
    import torch.nn as nn

    from .models import build_model
    from .train.cuda import autocast
    rows = []
    p = ctx.preset
    steps_per_epoch = CIFAR100_TRAIN // int(p["batch_size"])
    eval_batches = -(-CIFAR100_TEST // int(p["eval_batch_size"]))
    evals = -(-int(p["epochs"]) // int(p["eval_every"]))
    oom = getattr(torch.cuda, "OutOfMemoryError", RuntimeError)
    for kind in WRN_KINDS:
        torch.manual_seed(0)
        model = build_model(ctx.model, 100, attention=kind, width=ctx.width, input_size=32)
        model.to(ctx.device).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x = torch.randn(ctx.batch, 3, 32, 32, device=ctx.device).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 100, (ctx.batch,), device=ctx.device)
        row: dict[str, Any] = {"kind": kind, "batch": ctx.batch, "eval_batch": ctx.eval_batch,
                               "params": sum(q.numel() for q in model.parameters())}

        def train_step():
            with autocast("bf16", ctx.device):
                loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        try:
            model.train()
            ctx.reset_peak()
            row["step_s"] = _timed(ctx, train_step)
            row["train_peak_gib"] = ctx.peak_gib()
        except oom as e:
            row["train_error"] = f"out of memory: {str(e).splitlines()[0][:200]}"
        opt.zero_grad(set_to_none=True)
        xe = torch.randn(ctx.eval_batch, 3, 32, 32, device=ctx.device).contiguous(memory_format=torch.channels_last)

        def eval_step():
            with torch.no_grad(), autocast("bf16", ctx.device):
                model(xe)
        try:
            model.eval()
            ctx.reset_peak()
            row["eval_s"] = _timed(ctx, eval_step)
            row["eval_peak_gib"] = ctx.peak_gib()
        except oom as e:
            row["eval_error"] = f"out of memory at eval_batch_size {ctx.eval_batch}: {str(e).splitlines()[0][:200]}"
        if "step_s" in row and "eval_s" in row:
            hours = int(p["epochs"]) * steps_per_epoch * row["step_s"] + evals * eval_batches * row["eval_s"]
            row["projected_hours_per_run"] = hours / 3600
        rows.append(row)
        del model, opt, x, xe
        ctx.reset_peak()
    failed = [r["kind"] for r in rows if "train_error" in r or "eval_error" in r]
    return {"status": "failed" if failed else "ok", "rows": rows, "model": ctx.model,
            "preset": {k: p[k] for k in ("batch_size", "eval_batch_size", "epochs", "eval_every")},
            "steps_per_epoch": steps_per_epoch, **({"reason": f"out of memory: {', '.join(failed)}"} if failed else {})}


def _pytest_summary(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", ln)]
    return lines[-1].strip("= ") if lines else (text.strip().splitlines() or ["(no output)"])[-1]


def step_cuda_tests(ctx: Ctx) -> dict:
    if importlib.util.find_spec("pytest") is None:
        return _skip("pytest is not installed")
    tests = ROOT / "tests"
    if not tests.is_dir():
        return _skip(f"no tests folder at {tests}")
    files = sorted(str(p.relative_to(ROOT)) for p in tests.rglob("test_*.py")
                   if "pytest.mark.cuda" in p.read_text(encoding="utf-8"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "-o", "addopts=", "-rfEs",
           *files]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=ctx.env(), capture_output=True, text=True, timeout=420)
    summary = _pytest_summary(proc.stdout)
    status = "ok" if proc.returncode in (0, 5) else "failed"
    out = {"status": status, "files": files, "summary": summary, "seconds": round(time.perf_counter() - t0, 1),
           "returncode": proc.returncode}
    if status != "ok":
        out["reason"] = summary
        out["tail"] = proc.stdout[-4000:]
    return out


def _train_cmd(ctx: Ctx, out: Path, params: dict) -> list[str]:
    cmd = [sys.executable, "-m", "attnrepro", "train", "--out", str(out), "--no-progress"]
    for k, v in params.items():
        cmd += ["-p", k, str(v).lower() if isinstance(v, bool) else str(v)]
    return cmd


def _train_base(ctx: Ctx) -> dict:
    return {"dataset": "synthetic", "model": "resnet20", "width": 0.25 if ctx.dry else 1.0, "epochs": 1,
            "batch_size": 16 if ctx.dry else 64, "eval_batch_size": 64 if ctx.dry else 512,
            "max_steps": ctx.steps, "device": ctx.device_key(), "checkpoint": False, "seed": 0}


def step_compile_train(ctx: Ctx) -> dict:
    rows, failed = [], []
    kinds = dict(list(COMPILE_KINDS.items())[:1]) if ctx.dry else COMPILE_KINDS
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in kinds.items():
            params = {**_train_base(ctx), **kw, "amp": "bf16", "channels_last": True, "compile": True}
            env = {**ctx.env(), "TORCH_LOGS": "graph_breaks,recompiles"}
            t0 = time.perf_counter()
            proc = subprocess.run(_train_cmd(ctx, Path(tmp) / name, params), cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=600)
            log = proc.stdout + proc.stderr
            breaks = [ln.strip() for ln in log.splitlines() if re.search(r"[Gg]raph break", ln)]
            recompiles = [ln.strip() for ln in log.splitlines() if "Recompiling function" in ln]
            row = {"kind": name, "returncode": proc.returncode, "seconds": round(time.perf_counter() - t0, 1),
                   "graph_breaks": len(breaks), "recompiles": len(recompiles),
                   "graph_break_lines": breaks[:10], "recompile_lines": recompiles[:10],
                   "summary": next((ln for ln in proc.stdout.splitlines() if ln.startswith("attnrepro train:")), "")}
            if proc.returncode != 0:
                row["tail"] = log[-3000:]
                failed.append(name)
            rows.append(row)
    return {"status": "failed" if failed else "ok", "rows": rows, "steps": ctx.steps,
            **({"reason": f"train failed: {', '.join(failed)}"} if failed else {})}


_DETERMINISM_SCRIPT = r"""
import hashlib, json, sys, time
from attnrepro.train import run_training
from attnrepro.train.checkpoint import load_checkpoint, read_jsonl
out, base, kinds = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
result = {}
for name, kw in kinds.items():
    t0 = time.perf_counter()
    run_training({**base, **kw}, f"{out}/{name}", verbose=False, progress=False)
    h = hashlib.sha256()
    state = load_checkpoint(f"{out}/{name}/checkpoint.pt")["model"]
    for k in sorted(state):
        h.update(k.encode() + state[k].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    rows = read_jsonl(f"{out}/{name}/metrics.jsonl")
    result[name] = {"numbers": [[r["train_loss"], r["val_loss"], r["val_top1"]] for r in rows],
                    "weights_sha": h.hexdigest()[:16], "seconds": time.perf_counter() - t0}
print("RESULT " + json.dumps(result))
"""


def step_determinism(ctx: Ctx) -> dict:
    kinds = dict(list(DETERMINISM_KINDS.items())[:2]) if ctx.dry else DETERMINISM_KINDS
    base = {**_train_base(ctx), "checkpoint": True, "max_steps": 3 if ctx.dry else 10}
    script = "import torch\n" + _DETERMINISM_SCRIPT
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, det in (("a", True), ("b", True), ("off", False)):
            proc = subprocess.run([sys.executable, "-c", script, f"{tmp}/{label}", json.dumps({**base,
                                   "deterministic": det}), json.dumps(kinds)], cwd=ROOT, env=ctx.env(),
                                  capture_output=True, text=True, timeout=600)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                return {"status": "failed", "reason": f"run {label} (deterministic={det}) failed",
                        "tail": (proc.stdout + proc.stderr)[-4000:]}
            runs[label] = json.loads(line[len("RESULT "):])
    rows, differ = [], []
    for name in kinds:
        a, b, off = runs["a"][name], runs["b"][name], runs["off"][name]
        same = a["numbers"] == b["numbers"] and a["weights_sha"] == b["weights_sha"]
        rows.append({"kind": name, "identical": same, "numbers": a["numbers"], "weights_sha": [a["weights_sha"],
                     b["weights_sha"]], "seconds_deterministic": round(a["seconds"], 2),
                     "seconds_default": round(off["seconds"], 2),
                     "default_same_as_deterministic": off["weights_sha"] == a["weights_sha"]})
        if not same:
            differ.append(name)
    return {"status": "failed" if differ else "ok", "rows": rows,
            **({"reason": f"two deterministic runs differ: {', '.join(differ)}"} if differ else {})}


STEPS: dict[str, Callable[[Ctx], dict]] = {
    "environment": step_environment, "sdpa": step_sdpa, "layers": step_layers, "wrn": step_wrn,
    "cuda_tests": step_cuda_tests, "compile_train": step_compile_train, "determinism": step_determinism}


# ---------------------------------------------------------------------------------------------------- driver
def check(out: Path, *, dry: bool = False, only: list[str] | None = None, say=print) -> dict:
    """Run the steps (all, or ``only``) and write ``out/gpu_check.json`` and ``out/gpu_check.txt`` (also after each
    step, so a check that is killed leaves what it did). Returns the JSON's content."""
    import torch
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "dry_run": dry, "steps": {}}
    if not dry and not torch.cuda.is_available():
        say("gpu-check: no CUDA GPU here; the steps that need one are skipped (DRY=1 runs them on the CPU)")
    ctx = Ctx(dry, out)
    for name in only or list(STEPS):
        t0 = time.perf_counter()
        if name != "environment" and ctx.device.type != "cuda" and not dry:
            res = _skip("no CUDA GPU (torch.cuda.is_available() is False)")
        else:
            try:
                res = STEPS[name](ctx)
            except Exception as e:  # noqa: BLE001 - one step's failure is a result, the others still run
                res = {"status": "failed", "reason": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}",
                       "traceback": traceback.format_exc()[-4000:]}
        res["seconds"] = round(time.perf_counter() - t0, 1)
        result["steps"][name] = res
        _write(out, result)
        say(summary_lines({"steps": {name: res}})[0])
    result["seconds"] = round(sum(s["seconds"] for s in result["steps"].values()), 1)
    _write(out, result)
    return result


def _write(out: Path, result: dict) -> None:
    from ._io import atomic_write_text
    atomic_write_text(out / "gpu_check.json", json.dumps(result, indent=1, default=str) + "\n")
    atomic_write_text(out / "gpu_check.txt", "\n".join(summary_lines(result)) + "\n")


def _gib(x) -> str:
    return "n/a" if x is None else f"{x:.2f} GiB"


def summary_lines(result: dict) -> list[str]:
    """The short text summary: one line per step, and a few lines of what matters in it."""
    lines = []
    for name, s in result["steps"].items():
        head = f"[{s['status']}] {name}" + (f": {s['reason']}" if s.get("reason") else "") + \
               (f" ({s['seconds']} s)" if "seconds" in s else "")
        lines.append(head)
        if s["status"] == "skipped":
            continue
        if name == "environment":
            lines.append(f"    python {s.get('python')}, torch {s.get('torch')}, torchvision {s.get('torchvision')}, "
                         f"cuda {s.get('cuda')}, {s.get('gpu', s.get('device'))}"
                         + (f"; missing (skipped where needed): {', '.join(s['missing'])}" if s.get("missing") else ""))
        elif name == "sdpa":
            for r in s.get("rows", []):
                lines.append(f"    AA {r['layer']} {r['input']} {r['amp']}: head {r['dkh']}/{r['dvh']} -> "
                             f"{r['sdpa_head_size']}, selected {r['selected']}, ran {', '.join(r['ops_ran']) or '-'}; "
                             f"{r['ms_fwd_bwd']} ms, {_gib(r['peak_gib'])}")
        elif name == "layers":
            for r in s.get("rows", []):
                d, b = r["device_vs_cpu_fp32"], r["bf16_vs_fp32"]
                lines.append(f"    {r['layer']}: device vs cpu {max(d.values()):.1e}, bf16 vs fp32 {b['out']:.1e} "
                             f"(grad {b['grad']:.1e}), {r['bf16_output_dtype']}{'' if r['ok'] else '  <- OUT'}")
        elif name == "wrn":
            for r in s.get("rows", []):
                err = r.get("train_error") or r.get("eval_error")
                lines.append(f"    {s.get('model')} {r['kind']}: " + (err if err else
                             f"{1000 * r['step_s']:.1f} ms/step at B={r['batch']}, train {_gib(r.get('train_peak_gib'))}, "
                             f"eval {_gib(r.get('eval_peak_gib'))} at B={r['eval_batch']}, "
                             f"{r.get('projected_hours_per_run', 0):.1f} h per run of the preset"))
        elif name == "cuda_tests":
            lines.append(f"    {s.get('summary')}")
        elif name == "compile_train":
            for r in s.get("rows", []):
                lines.append(f"    {r['kind']}: rc {r['returncode']}, {r['graph_breaks']} graph breaks, "
                             f"{r['recompiles']} recompiles, {r['seconds']} s")
        elif name == "determinism":
            for r in s.get("rows", []):
                lines.append(f"    {r['kind']}: {'identical' if r['identical'] else 'DIFFER'}; "
                             f"{r['seconds_deterministic']} s deterministic vs {r['seconds_default']} s default")
    return lines


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=str(ROOT / "reports" / "gpu-check"), metavar="DIR",
                        help="where gpu_check.json and gpu_check.txt go (default: reports/gpu-check/)")
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU at tiny sizes (a smoke test)")
    parser.add_argument("--only", nargs="+", choices=list(STEPS), metavar="STEP",
                        help=f"run only these steps: {', '.join(STEPS)}")


def run(args: argparse.Namespace) -> int:
    result = check(Path(args.out), dry=args.dry_run, only=args.only)
    print(f"gpu-check: {Path(args.out) / 'gpu_check.json'} and gpu_check.txt ({result['seconds']} s)")
    return 1 if any(s["status"] == "failed" for s in result["steps"].values()) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="attnrepro gpu-check", description=__doc__.splitlines()[0])
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
