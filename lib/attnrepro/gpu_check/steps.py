"""The steps of the GPU check (:mod:`attnrepro.gpu_check` lists them): each takes the :class:`~.context.Ctx` and
returns its result as a dict."""
from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .context import (CIFAR100_TEST, CIFAR100_TRAIN, COMPILE_KINDS, DETERMINISM_KINDS, OPTIONAL, ROOT, WRN_KINDS,
                      Ctx)

__all__ = ["step_environment", "step_sdpa", "step_layers", "step_wrn", "step_cuda_tests", "step_compile_train",
           "step_determinism"]




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
    from ..train.metrics import git_commit
    out["git_commit"], out["git_dirty"] = git_commit()
    return out


def _aa_shapes(ctx: Ctx) -> list[dict]:
    """The distinct AA layers of the model (in, out, stride, input side), found by a forward of 2 images."""
    import torch
    from ..models import build_model
    from ..modules import AAConv2d
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

    from ..train.cuda import autocast
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
    from ..modules import AAConv2d, AWConv2d, CBAM, ExpAttConv2d, SqueezeExcite
    from ..modules.functional import KERNELS
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

    from ..models import build_model
    from ..train.cuda import autocast
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
