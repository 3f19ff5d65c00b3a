"""``attnrepro`` command line: train | rerun | run | list | report | compare | bench | tables | findings | plan |
config | gpu-check.

Each command lives in its own module, which exposes ``configure(parser)`` (adds its arguments) and
``run(args) -> int`` (does the work); a module that serves several commands names them ``configure_<command>`` and
``run_<command>``, which take precedence over ``configure``/``run``. Bad input (:class:`~attnrepro.config.ConfigError`, :class:`UsageError`)
exits with code 2 and a one-line reason, before any training starts.

Every command takes ``--plugin FILE.py`` (repeatable): each file is imported before the command runs (it registers
its attention kinds with ``attnrepro.register``) and added to ``$ATTNREPRO_PLUGINS``, so the notebook kernels and
``torchrun`` children the command starts load it too (:mod:`attnrepro.registry`).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Sequence

from .config import ConfigError, coerce, describe
from .errors import UsageError

__all__ = ["main", "UsageError", "add_overrides", "overrides_from_args"]


# name -> (module, one-line help). Modules are imported when the parser is built.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("attnrepro.train.cli", "train one run config into an output folder (resumes when it can)"),
    "rerun": ("attnrepro.train.cli", "train a recorded run folder again as it was trained, and compare its numbers"),
    "run": ("attnrepro.pipeline.cli", "run ablation notebooks over a preset's grid with papermill"),
    "list": ("attnrepro.pipeline.cli", "list ablations, presets and what their grids expand to"),
    "report": ("attnrepro.analysis.cli", "build reports/<preset>/report.html from the runs"),
    "compare": ("attnrepro.analysis.cli", "the paired delta, interval and verdict of two variants of an ablation"),
    "bench": ("attnrepro.bench.cli", "benchmark what each attention costs; CSV + markdown under reports/bench/"),
    "tables": ("attnrepro.analysis.cli", "the papers' params/GFLOPs rows beside the built models; reports/tables/"),
    "findings": ("attnrepro.analysis.cli", "what a preset's report found, by the findings rule; --readme updates README"),
    "plan": ("attnrepro.analysis.cli", "seeds a preset needs to detect an effect, from its records' paired SDs"),
    "config": ("attnrepro.cli", "print every run-config key with its type, default and choices"),
    "gpu-check": ("attnrepro.gpu_check", "what this machine's GPU does with the suite; reports/gpu-check/ (make gpu-check)"),
}


def add_overrides(parser: argparse.ArgumentParser) -> None:
    """The shared ``-p KEY VALUE`` option (repeatable)."""
    parser.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="set a run-config key (see `attnrepro config`); repeatable")


def overrides_from_args(pairs: Sequence[Sequence[str]]) -> dict[str, Any]:
    """``[(key, value), ...]`` from ``-p`` into a typed dict; raises :class:`ConfigError` on a bad key or value."""
    return {k: coerce(k, v) for k, v in pairs}


# ---------------------------------------------------------------------------- `attnrepro config`
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("table", "json", "yaml"), default="table",
                        help="output format (default: table)")


def run(args: argparse.Namespace) -> int:
    rows = describe()
    if args.format == "json":
        import json
        print(json.dumps(rows, indent=1))
    elif args.format == "yaml":
        import yaml
        print(yaml.safe_dump({r["key"]: r["default"] for r in rows}, sort_keys=False), end="")
    else:
        w = max(len(r["key"]) for r in rows)
        for r in rows:
            ch = f"  {{{', '.join(r['choices'])}}}" if r["choices"] else ""
            print(f"{r['key']:<{w}}  {r['type']:<12} default={r['default']!r}{ch}\n{'':<{w}}  {r['help']}")
    return 0


# ---------------------------------------------------------------------------- entry point
def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser. Only ``command``'s module is imported (all of them when None), so a command starts fast and
    one command's import trouble cannot break another."""
    parser = argparse.ArgumentParser(prog="attnrepro", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (modname, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                       help="a Python file that registers attention kinds (attnrepro.register); loaded before the "
                            "command and by the processes it starts; repeatable")
        if command is not None and name != command:
            continue
        mod = importlib.import_module(modname)
        configure_fn = getattr(mod, f"configure_{name}", None) or mod.configure
        configure_fn(p)
        p.set_defaults(_run=getattr(mod, f"run_{name}", None) or mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    try:
        if args.plugin:
            from .registry import use_plugins
            use_plugins(args.plugin)
        return int(args._run(args) or 0)
    except (ConfigError, UsageError) as e:
        print(f"attnrepro {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"attnrepro {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `attnrepro list | head`: the reader left; not an error of ours
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
