"""``attnrepro bench``: the command line of :mod:`attnrepro.bench`."""
from __future__ import annotations

import argparse
import os

import torch

from ..errors import UsageError
from . import GROUPS, markdown_table, run_benchmarks

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run (default: auto = cuda when available, else cpu)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, 1-2 repeats: a CI smoke test of the harness (targets not judged)")
    parser.add_argument("--out", default=os.path.join("reports", "bench"),
                        help="output folder for bench.csv / bench.md (default: reports/bench)")
    parser.add_argument("--only", nargs="+", choices=GROUPS, metavar="GROUP",
                        help=f"run only these groups: {', '.join(GROUPS)}")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice); on a shared machine use 1")
    parser.add_argument("--clock", choices=("auto", "wall", "cpu"), default="auto",
                        help="wall: time.perf_counter; cpu: process CPU time (robust on a busy machine, CPU and "
                             "1 thread only); auto (default): cpu when --device cpu --threads 1, else wall")


def run(args: argparse.Namespace) -> int:
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda, but torch.cuda.is_available() is False on this machine; "
                         "use --device cpu (or auto)")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads {args.threads} is not valid; it must be >= 1")
    if args.clock == "cpu" and device != "cpu":
        raise UsageError(f"--clock cpu times CPU work only; with --device {device} use --clock wall (or auto)")
    threads = torch.get_num_threads()
    try:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        rows = run_benchmarks(device, quick=args.quick, out=args.out, only=args.only, clock=args.clock)
    finally:
        torch.set_num_threads(threads)
    print()
    print(markdown_table(rows))
    print(f"\nwritten: {os.path.join(args.out, 'bench.md')} and bench.csv")
    return 1 if any(r.met == "error" for r in rows) else 0
