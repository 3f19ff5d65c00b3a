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

The package: :mod:`.context` (what the steps share), :mod:`.steps` (the steps), this module (running them, the
files, the summary, the command line).
"""
from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from .context import COMPILE_KINDS, DETERMINISM_KINDS, OPTIONAL, ROOT, WRN_KINDS, Ctx
from .steps import (_skip, step_compile_train, step_cuda_tests, step_determinism, step_environment, step_layers,
                    step_sdpa, step_wrn)

__all__ = ["STEPS", "OPTIONAL", "WRN_KINDS", "COMPILE_KINDS", "DETERMINISM_KINDS", "main", "configure", "run", "check",
           "summary_lines"]


STEPS: dict[str, Callable[[Ctx], dict]] = {
    "environment": step_environment, "sdpa": step_sdpa, "layers": step_layers, "wrn": step_wrn,
    "cuda_tests": step_cuda_tests, "compile_train": step_compile_train, "determinism": step_determinism}


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
    from .._io import atomic_write_text
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
