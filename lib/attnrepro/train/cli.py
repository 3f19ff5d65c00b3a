"""``attnrepro train -p KEY VALUE ... --out DIR [--config FILE.yaml]``: train one run config into a run folder;
``attnrepro rerun RUN_FOLDER [--out DIR]``: train a recorded run again, as it was trained, and say whether the numbers
are the same.

``--config`` takes a YAML (or JSON) mapping of run-config keys, such as a run folder's ``config.json``: its recorded
``config_hash`` is checked against the hash its keys give (a mismatch means the file was edited, or the code's hash
changed), and when a ``metrics.json`` sits beside it the intra-op thread count it records is applied (CPU results
depend on it: a sum split over 2 threads rounds differently from one over 1). ``--threads`` sets it explicitly.
The pipeline sets the same count through ``OMP_NUM_THREADS`` (cores // jobs), and every record says what it was.

Every check that needs no training happens first (keys, values, the YAML file, the device and AMP mode, the
dataset's presence, a run folder holding another config); any failure exits with code 2 and one line. A run
folder that holds this config's checkpoint is resumed; one that holds this config finished is left as it is.
Under ``torchrun --nproc_per_node N -m attnrepro train ...`` the run is data-parallel (DDP); rank 0 alone prints.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..cli import add_overrides, overrides_from_args
from ..config import ConfigError, RunConfig, check_keys
from ..errors import UsageError

__all__ = ["configure", "run", "config_from_args", "recorded_threads", "configure_rerun", "run_rerun"]


def configure(parser: argparse.ArgumentParser) -> None:
    add_overrides(parser)
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="run folder (created; resumed when it "
                        "holds this config's checkpoint)")
    parser.add_argument("--config", "-c", metavar="FILE.yaml", help="a YAML mapping of run-config keys, e.g. a "
                        "run folder's config.json (its config_hash is checked; the thread count its metrics.json "
                        "records is applied); -p options override it")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="intra-op CPU threads (default: the count recorded beside --config, else torch's)")
    bar = parser.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="always show progress bars (default: only on a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress bars")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The RunConfig of ``--config`` plus ``-p`` overrides; raises ConfigError / UsageError (a recorded
    ``config_hash`` that its keys do not give)."""
    values: dict = {}
    recorded_hash = None
    if args.config:
        import yaml
        p = Path(args.config)
        if not p.is_file():
            raise UsageError(f"--config {args.config}: no such file")
        try:
            loaded = yaml.safe_load(p.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise UsageError(f"--config {args.config}: not readable YAML ({str(e).splitlines()[0]})") from e
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise UsageError(f"--config {args.config}: expected a mapping of run-config keys, got "
                             f"{type(loaded).__name__}")
        recorded_hash = loaded.pop("config_hash", None)
        check_keys(loaded)
        values.update(loaded)
        if recorded_hash is not None:
            got = RunConfig.from_dict(values).hash()
            if got != recorded_hash:
                raise UsageError(f"--config {args.config}: its config_hash {recorded_hash} is not the hash of its keys "
                                 f"({got}): the file was edited, or this code hashes configs differently")
    values.update(overrides_from_args(args.param))
    return RunConfig.from_dict(values)


def recorded_threads(config_path: str | os.PathLike | None) -> int | None:
    """The intra-op thread count recorded in the ``metrics.json`` beside a run folder's ``config.json``, or None."""
    if not config_path:
        return None
    import json
    try:
        m = json.loads((Path(config_path).parent / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    n = (m.get("env") or {}).get("num_threads") if isinstance(m, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else None


def _apply_threads(n: int | None) -> int:
    """Set the intra-op thread count (and ``OMP_NUM_THREADS`` for any child process); returns the count in use."""
    import torch
    if n is not None:
        if n < 1:
            raise UsageError(f"--threads {n}: must be >= 1")
        os.environ["OMP_NUM_THREADS"] = str(n)
        torch.set_num_threads(n)
    return torch.get_num_threads()


def run(args: argparse.Namespace) -> int:
    from ..data import DataError
    from .cuda import CUBLAS_WORKSPACE
    from .loop import NonFiniteLoss, preflight, run_training

    cfg = config_from_args(args)
    threads = args.threads if args.threads is not None else recorded_threads(args.config)
    if threads is not None and args.threads is None and int(os.environ.get("RANK", "0")) == 0:
        print(f"attnrepro train: {threads} intra-op thread(s), as recorded beside {args.config}", file=sys.stderr)
    _apply_threads(threads)
    if cfg.deterministic:   # before anything starts cuBLAS (it reads the variable once)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    try:
        preflight(cfg, args.out)
    except DataError as e:
        raise UsageError(str(e)) from e
    main = int(os.environ.get("RANK", "0")) == 0      # under torchrun: rank 0 alone prints
    try:
        result = run_training(cfg, args.out, progress=args.progress)
    except NonFiniteLoss as e:
        if main:
            print(f"attnrepro train: stopped: {e}", file=sys.stderr)
        return 1
    if not main:
        return 0
    f = result.get("final") or {}
    top1 = f.get("val_top1")
    print(f"attnrepro train: {result.get('status')} {result.get('epochs_completed')} epochs in "
          f"{result.get('wall_time_s', 0):.1f}s; val_top1 {top1 if top1 is None else round(top1, 2)}; {args.out}")
    return 0


# ---------------------------------------------------------------------------- `attnrepro rerun`
def configure_rerun(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_FOLDER", help="a finished run folder, e.g. runs/cpu/kernel/cauchy-s1")
    parser.add_argument("--out", "-o", default=None, metavar="DIR",
                        help="where to train it (default: reruns/<preset>/<ablation>/<run> under the current folder; "
                             "never the record itself)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="intra-op CPU threads (default: the count the record says it used)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="never show progress bars")


def run_rerun(args: argparse.Namespace) -> int:
    """Train the record's config again (its hash checked, its thread count applied) and compare the final
    metrics: exit 0 when every final number is the same, 1 when one differs (they are listed)."""
    import json
    src = Path(args.run_dir)
    conf = src / "config.json"
    try:
        rec = json.loads((src / "metrics.json").read_text())
    except (OSError, ValueError):
        raise UsageError(f"{src}: no readable metrics.json (rerun takes a finished run folder)") from None
    if rec.get("status") != "finished" or not conf.is_file():
        raise UsageError(f"{src}: not a finished run folder (status {rec.get('status')!r}, "
                         f"config.json {'present' if conf.is_file() else 'missing'})")
    out = Path(args.out) if args.out else Path("reruns", *src.resolve().parts[-3:])
    if out.resolve() == src.resolve():
        raise UsageError(f"--out {out}: that is the record itself; rerun never writes into it")
    ns = argparse.Namespace(config=str(conf), param=[], out=str(out), threads=args.threads, progress=args.progress)
    rc = run(ns)
    if rc:
        return rc
    new = json.loads((out / "metrics.json").read_text())
    a, b = rec.get("final") or {}, new.get("final") or {}
    diff = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
    if not diff:
        print(f"attnrepro rerun: reproduced exactly: every final metric of {src} ({len(a)} values) is the same")
        return 0
    for k, (x, y) in diff.items():
        print(f"attnrepro rerun: {k}: recorded {x}, now {y}")
    env_a, env_b = rec.get("env") or {}, new.get("env") or {}
    why = []
    if env_a.get("num_threads") != env_b.get("num_threads"):
        why.append(f"threads {env_a.get('num_threads')} vs {env_b.get('num_threads')}")
    code_a, code_b = env_a.get("code") or {}, env_b.get("code") or {}
    if not code_a:
        why.append("the record carries no code hashes")
    elif code_a != code_b:
        why.append("training code differs in " + ", ".join(g for g in sorted(set(code_a) | set(code_b))
                                                            if code_a.get(g) != code_b.get(g)))
    print(f"attnrepro rerun: {len(diff)} final metric(s) differ" + (f" ({'; '.join(why)})" if why else ""))
    return 1
