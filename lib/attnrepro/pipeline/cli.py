"""The pipeline's command-line verbs: ``attnrepro run`` and ``attnrepro list``."""
from __future__ import annotations

import argparse
import sys

from ..cli import add_overrides
from ..errors import UsageError
from .cluster import CLUSTER_KEYS, cluster_spec
from .execution import run_all, summary_table
from .grids import expand, grid_variants, list_ablations, list_presets, load_grid, load_preset, notebooks_dir
from .jobs import CLUSTERS, EXECUTORS, job_state, read_job, submit_runs
from .runstate import reuse_origin, run_state

__all__ = ["configure_run", "run_run", "configure_list", "run_list"]


def _selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", default=None, metavar="S,S",
                        help="these seeds instead of the preset's, e.g. 5,6 (added to the preset's folders; the "
                             "reference's matching seeds are run too, since deltas pair by seed)")
    parser.add_argument("--variants", default=None, metavar="V,V",
                        help="only these variants, e.g. none,se (each ablation's reference is added)")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--notebooks-dir", default=None, metavar="DIR",
                        help="folder with the ablation notebooks, grids and presets/ (default: the repository's "
                             "notebooks/, or $ATTNREPRO_NOTEBOOKS)")
    parser.add_argument("--runs-dir", default=None, metavar="DIR",
                        help="where run folders go (default: runs, or $ATTNREPRO_RUNS)")


def configure_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ablations", nargs="+", metavar="ABLATION", help="ablation(s) to run, e.g. kernel placement")
    parser.add_argument("--preset", required=True, help="preset name (notebooks/presets/NAME.yaml), e.g. smoke")
    add_overrides(parser)
    parser.add_argument("--jobs", "-j", type=int, default=None,
                        help="notebooks executed at once (default: the preset's jobs, else 1); --executor local")
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="local: a pool of --jobs processes on this machine (default); submitit: one cluster "
                             "job per run that trains (README, 'Running on a cluster')")
    parser.add_argument("--submitit-cluster", choices=CLUSTERS, default="slurm",
                        help="with --executor submitit: slurm (default), or local (jobs as processes of this "
                             "machine: a dry run of the cluster route)")
    parser.add_argument("--cluster", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="a job resource over the preset's cluster: section (repeatable), e.g. --cluster "
                             f"partition gpu; keys: {', '.join(CLUSTER_KEYS)}")
    parser.add_argument("--wait", action="store_true",
                        help="with --executor submitit: block until every job has ended, then print the summary")
    parser.add_argument("--force", action="store_true", help="re-run finished runs too (and replace records of "
                        "another config)")
    parser.add_argument("--replace", action="store_true",
                        help="replace the records of folders that hold another config's finished run (the grid or "
                             "preset changed) or a corrupt record; finished runs of their config are still skipped. "
                             "Never needed for -p: hashed overrides go to runs/<preset>+<key>=<value>/")
    _selection(parser)
    _common(parser)


def run_run(args: argparse.Namespace) -> int:
    runs = expand(args.ablations, args.preset, args.param, nb_dir=args.notebooks_dir, runs_dir=args.runs_dir,
                  seeds=args.seeds, variants=args.variants)
    preset = load_preset(notebooks_dir(args.notebooks_dir), args.preset)
    jobs = args.jobs if args.jobs is not None else preset["jobs"]
    if args.executor == "local" and (args.cluster or args.wait):
        raise UsageError(f"{'--cluster' if args.cluster else '--wait'} is for --executor submitit (the local pool "
                         "always waits for its runs)")
    try:
        if args.executor == "submitit":
            spec = cluster_spec(preset.get("cluster"), args.cluster, where=f"preset {args.preset}.yaml")
            results = submit_runs(runs, spec, cluster=args.submitit_cluster, force=args.force, replace=args.replace,
                                  wait=args.wait)
        else:
            results = run_all(runs, jobs=jobs, force=args.force, replace=args.replace)
    except KeyboardInterrupt:
        if args.executor == "submitit":
            print("\nattnrepro run: stopped waiting; the submitted jobs go on (attnrepro list shows their state)",
                  file=sys.stderr)
            return 130
        done = sum(1 for r in runs if run_state(r) == "finished")
        print(f"\nattnrepro run: interrupted; {done} of {len(runs)} run(s) are finished and kept, an interrupted "
              "run resumes from its checkpoint on the next attnrepro run", file=sys.stderr)
        return 130
    failed = [r for r in results if r["status"] == "failed"]
    print(summary_table(results))
    if any(r["status"] in ("submitted", "queued", "running") for r in results):
        print("the jobs run on: attnrepro list (with the same ablations and --preset) shows their state; "
              "--wait waits for them", file=sys.stderr)
    if runs and runs[0].overrides:
        print(f"-p {' '.join(f'{k}={v}' for k, v in runs[0].overrides.items())} changes the configs: these runs are "
              f"in {runs[0].out_dir.parent.parent} (the preset's own records are not touched); report them with "
              f"attnrepro report --preset {runs[0].preset}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {len(results)} run(s) failed; see their log.txt and notebook.ipynb",
              file=sys.stderr)
        return 1
    return 0


def configure_list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ablations", nargs="*", metavar="ABLATION",
                        help="with --preset: show the runs these ablations expand to and their state")
    parser.add_argument("--preset", default=None, help="preset to expand the grids with")
    add_overrides(parser)
    _selection(parser)
    parser.add_argument("--papermill", action="store_true",
                        help="print, for each run, the papermill command that executes its notebook by hand")
    _common(parser)


def run_list(args: argparse.Namespace) -> int:
    nbd = notebooks_dir(args.notebooks_dir)
    if args.preset is None and not args.ablations:
        print("ablations:")
        for a in list_ablations(nbd):
            g = load_grid(nbd, a)
            n = len(grid_variants(g, f"grid {a}.yaml"))
            print(f"  {a:<12} {n:>2} variants, reference {g.get('reference')!s:<10} {g.get('description', '')}")
        print("presets:")
        for p in list_presets(nbd):
            d = load_preset(nbd, p)
            print(f"  {p:<12} seeds {d['seeds']!s:<10} {d.get('description', '')}")
        return 0
    preset = args.preset or "smoke"
    runs = expand(args.ablations or list_ablations(nbd), preset, args.param, nb_dir=nbd, runs_dir=args.runs_dir,
                  seeds=args.seeds, variants=args.variants)
    if args.papermill:
        for r in runs:
            print(papermill_command(r))
        return 0
    if runs and runs[0].overrides:
        print(f"# -p {' '.join(f'{k}={v}' for k, v in runs[0].overrides.items())}: runs in "
              f"{runs[0].out_dir.parent.parent}")
    w = max(len(r.name) for r in runs)
    for r in runs:
        params = " ".join(f"{k}={v}" for k, v in r.params.items())
        ref = " (reference)" if r.variant == r.reference else ""
        state = run_state(r)
        info = read_job(r)
        job = f"  job {info['job_id']} {job_state(info)[0]}" if info is not None else ""
        reused = ""
        if state == "finished":
            origin, broken = reuse_origin(r.out_dir, r.out_dir.parents[2])
            if origin:
                reused = f" (reused from {origin}" + (f"; link broken: {broken})" if broken else ")")
        print(f"{r.name:<{w}}  {state:<10}{job}  {r.config.hash()}  {params}{ref}{reused}")
    return 0


def papermill_command(run) -> str:
    """The shell command that executes ``run``'s notebook by hand, as the pipeline does (without its locks, reuse
    or failure records): every run-config key and notebook option as one YAML mapping (``-y``), kernel ``attnrepro``.
    Run it from the repository root, as the pipeline runs its notebooks."""
    import shlex
    import yaml
    params = {**run.config.to_dict(), **run.options, "out_dir": str(run.out_dir)}
    text = yaml.safe_dump(params, default_flow_style=True, sort_keys=False, width=10**6).strip()
    return shlex.join(["papermill", str(run.notebook), str(run.out_dir / "notebook.ipynb"), "-k", "attnrepro",
                       "-y", text])
