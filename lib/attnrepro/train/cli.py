"""``attnrepro train -p KEY VALUE ... --out DIR [--config FILE.yaml]``: train one run config into a run folder;
``attnrepro rerun RUN_FOLDER [--out DIR]``: train a recorded run again, as it was trained, and say whether the numbers
are the same.

``--config`` takes a YAML (or JSON) mapping of run-config keys, such as a run folder's ``config.json``: its recorded
``config_hash`` is checked against the hash its keys give (a mismatch means the file was edited, or the code's hash
changed), and when a ``metrics.json`` sits beside it the intra-op thread count it records is applied (CPU results
depend on it: a sum split over 2 threads rounds differently from one over 1). ``--threads`` sets it explicitly.
The pipeline sets the same count through ``OMP_NUM_THREADS`` (cores // jobs), and every record says what it was.
The numbers also depend on the processor (another CPU model's kernels round differently) and the torch
release: when the record says it was trained on another processor or release, ``train`` says so before it starts,
and ``rerun`` names every such difference beside the numbers that differ.

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

__all__ = ["configure", "run", "config_from_args", "recorded_env", "recorded_threads", "env_differences",
           "configure_rerun", "run_rerun"]


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


def recorded_env(config_path: str | os.PathLike | None) -> dict:
    """The ``env`` block of the ``metrics.json`` beside a run folder's ``config.json`` (empty when there is none)."""
    if not config_path:
        return {}
    import json
    try:
        m = json.loads((Path(config_path).parent / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    env = m.get("env") if isinstance(m, dict) else None
    return env if isinstance(env, dict) else {}


def recorded_threads(config_path: str | os.PathLike | None, env: dict | None = None) -> int | None:
    """The intra-op thread count recorded in the ``metrics.json`` beside a run folder's ``config.json`` (or in
    ``env``, that file's ``env`` block already read), or None."""
    n = (recorded_env(config_path) if env is None else env).get("num_threads")
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else None


#: what a CPU run's numbers depend on besides its config and thread count: the processor (its SIMD kernels round
#: differently), the library versions, and the training code
_ENV_KEYS = (("device_name", "processor"), ("torch", "torch"), ("torchvision", "torchvision"), ("python", "python"))


def env_differences(recorded: dict, current: dict) -> list[str]:
    """What differs between a record's ``env`` and this machine's, in words: the thread count, the processor, the
    library versions and the training code groups (``env["code"]``). Keys a record lacks are not compared, except
    the code hashes, whose absence is said."""
    out = []
    if recorded.get("num_threads") != current.get("num_threads"):
        out.append(f"threads {recorded.get('num_threads')} vs {current.get('num_threads')}")
    for key, word in _ENV_KEYS:
        if recorded.get(key) is not None and recorded.get(key) != current.get(key):
            out.append(f"{word} {recorded[key]} vs {current.get(key)}")
    code_a, code_b = recorded.get("code") or {}, current.get("code") or {}
    if not code_a:
        out.append("the record carries no code hashes")
    elif code_a != code_b:
        out.append("training code differs in " + ", ".join(g for g in sorted(set(code_a) | set(code_b))
                                                           if code_a.get(g) != code_b.get(g)))
    return out


def _machine_env() -> dict:
    import torch
    from .metrics import env_info
    return env_info(torch.device("cpu"))


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
    rec_env = recorded_env(args.config)
    threads = args.threads if args.threads is not None else recorded_threads(args.config, rec_env)
    if threads is not None and args.threads is None and int(os.environ.get("RANK", "0")) == 0:
        print(f"attnrepro train: {threads} intra-op thread(s), as recorded beside {args.config}", file=sys.stderr)
    _apply_threads(threads)
    if rec_env and rec_env.get("device") == "cpu" and cfg.device == "cpu" and int(os.environ.get("RANK", "0")) == 0:
        diff = [d for d in env_differences(rec_env, _machine_env()) if not d.startswith("threads")]
        if diff:
            print(f"attnrepro train: note: this machine differs from the record's ({'; '.join(diff)}): the numbers "
                  f"can differ from the recorded ones", file=sys.stderr)
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
    why = env_differences(rec.get("env") or {}, new.get("env") or {})
    print(f"attnrepro rerun: {len(diff)} final metric(s) differ" + (f" ({'; '.join(why)})" if why else ""))
    return 1
