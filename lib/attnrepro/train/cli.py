"""``attnrepro train -p KEY VALUE ... --out DIR [--config FILE.yaml]``: train one run config into a run folder.

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

__all__ = ["configure", "run", "config_from_args"]


def configure(parser: argparse.ArgumentParser) -> None:
    add_overrides(parser)
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="run folder (created; resumed when it "
                        "holds this config's checkpoint)")
    parser.add_argument("--config", "-c", metavar="FILE.yaml", help="a YAML mapping of run-config keys; "
                        "-p options override it")
    bar = parser.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="always show progress bars (default: only on a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress bars")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The RunConfig of ``--config`` plus ``-p`` overrides; raises ConfigError / UsageError."""
    values: dict = {}
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
        check_keys(loaded)
        values.update(loaded)
    values.update(overrides_from_args(args.param))
    return RunConfig.from_dict(values)


def run(args: argparse.Namespace) -> int:
    from ..data import DataError
    from .cuda import CUBLAS_WORKSPACE
    from .loop import NonFiniteLoss, preflight, run_training

    cfg = config_from_args(args)
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
