"""Runs as cluster jobs (``attnrepro run ... --executor submitit``): each run that trains is one submitit job, on
Slurm or on submitit's local executor, and the job executes the same notebook into the same run folder as the
process pool does (:func:`attnrepro.pipeline.execution.execute_group`), so nothing downstream changes.

- Before anything is submitted, :func:`~attnrepro.pipeline.execution.prepare` makes every check the pool makes (one
  message, exit code 2), with the GPUs the job requests in place of this machine's.
- Finished runs are skipped; the runs of one config go into one job (the first trains, the others reuse it when it
  has finished, inside the job); a run whose finished twin exists is reused here, without a job.
- Each run folder of a job gets ``job.json`` (written atomically): the job id, the executor, submitit's job
  folder (``<runs>/.submitit/<preset>/``: its scripts, pickles and logs) and the runs of the job. ``attnrepro
  list`` shows the job's state from it; a second ``attnrepro run`` does not submit a run whose job is still queued
  or running (or whose state Slurm cannot tell), and records a job that ended without a record (killed, out of
  memory, node failure) as failed with the job's state before it submits the run again, which then resumes from
  its checkpoint.
- A job preempted or out of time gets Slurm's USR2 signal; :class:`RunJob` is
  :class:`submitit.helpers.Checkpointable`: it records why in ``metrics.json`` and submitit requeues it; the
  requeued job resumes the run from its ``checkpoint.pt``.
- The locks (:func:`attnrepro._io.held_lock`) are taken inside the job, on the shared runs folder: see the README,
  "Running on a cluster", for the file systems they hold on.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from .._io import read_json
from ..errors import UsageError
from .cluster import ClusterSpec, executor_parameters, for_cluster, node_command, rendezvous_args
from .execution import KERNEL_NAME, ensure_kernel, execute_group, prepare, progress_line
from .grids import Run
from .runstate import (JOB_FILE, _record_failure, _run_locks, _summary_of, _write_json, record_twin_failure,
                       run_state)

try:    # submitit is a dependency; the pool and `attnrepro list` work without it
    from submitit.helpers import Checkpointable
except ImportError:  # pragma: no cover
    Checkpointable = object  # type: ignore[misc,assignment]

__all__ = ["EXECUTORS", "CLUSTERS", "JOB_FILE", "RunJob", "submit_runs", "read_job", "job_state", "job_folder"]

#: ``--executor`` choices: the process pool of this machine, or one submitit job per run
EXECUTORS = ("local", "submitit")

#: submitit clusters: ``slurm``, or ``local`` (jobs as processes of this machine: the tests, a dry run)
CLUSTERS = ("slurm", "local")

#: Slurm's job states, by what they mean for a run (``squeue``/``sacct`` names)
_SLURM_STATES = {
    "queued": ("PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "RESIZING", "SUSPENDED"),
    "running": ("RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"),
    "finished": ("COMPLETED",),
}


def job_folder(run: Run) -> Path:
    """submitit's folder for the jobs of ``run``'s preset: ``<runs>/.submitit/<preset>/`` (scripts, pickles, logs)."""
    return run.out_dir.parents[2] / ".submitit" / run.out_dir.parents[1].name


def read_job(run: Run) -> dict | None:
    """The ``job.json`` of ``run``'s folder, or None."""
    info = read_json(run.out_dir / JOB_FILE)
    return info if isinstance(info, dict) and info.get("job_id") else None


def job_state(info: dict) -> tuple[str, str]:
    """(``queued`` | ``running`` | ``finished`` | ``failed`` | ``unknown``, detail) of the job ``info`` names.

    A result pickle settles it (submitit writes one when the job function returns or raises); otherwise Slurm's
    accounting (``sacct``, through submitit) is asked, or, for a local job, whether its process still lives.
    """
    from submitit.core.utils import JobPaths, pickle_load
    folder, job_id = Path(info["folder"]), str(info["job_id"])
    result = JobPaths(folder, job_id, 0).result_pickle
    if result.exists():
        try:
            outcome, value = pickle_load(result)
        except Exception as e:  # noqa: BLE001 - a torn or foreign pickle
            return "unknown", f"unreadable result ({type(e).__name__})"
        if outcome == "success":
            return "finished", ""
        lines = [ln for ln in str(value).strip().splitlines() if ln.strip()]
        return "failed", lines[-1].strip() if lines else "error"
    if info.get("cluster") == "local":
        return ("running", "") if _local_alive(job_id) else ("failed", "its process ended without a result (killed?)")
    import submitit
    state = str(submitit.SlurmJob(folder, job_id).state).upper().split()[0] if job_id else "UNKNOWN"
    for mine, theirs in _SLURM_STATES.items():
        if state in theirs:
            return mine, state
    return ("unknown", state) if state == "UNKNOWN" else ("failed", state)


def _local_alive(job_id: str) -> bool:
    """Whether the local job's controller process (its id is the job id) is alive and is submitit's."""
    try:
        cmd = Path(f"/proc/{int(job_id)}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False
    return b"submitit" in cmd


class RunJob(Checkpointable):
    """One submitit job: train ``first`` (its notebook, as the pool does), then reuse it for the runs of its config
    that wait for it. On a multi-node job the first node executes the notebook, whose torchrun joins the others
    at a c10d rendezvous on the first node; the other nodes run that torchrun command only.

    Args (of the call):
        first: the run that trains.
        waiting: the runs of the same config, reused once ``first`` has finished.
        spec: the job's resources (threads, nodes, GPUs per node).
        force: re-run a finished run (``--force``); a requeued job never forces.
        kernel_name: the Jupyter kernel of the notebooks.
        cwd: the folder the notebooks run in (the submitter's, on the shared file system).
    """

    def __call__(self, first: Run, waiting: Sequence[Run], spec: ClusterSpec, force: bool = False,
                 kernel_name: str = KERNEL_NAME, cwd: str | None = None) -> list[dict]:
        import submitit
        if cwd:
            os.chdir(cwd)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):      # as the pool does: unless set
            os.environ.setdefault(var, str(spec.cpus_per_task))
        if spec.nodes > 1:
            env = submitit.JobEnvironment()
            host = env.hostnames[0]
            first = dataclasses.replace(first, options={**first.options,
                                                        "torchrun_args": rendezvous_args(spec.nodes, host, env.job_id)})
            if env.node > 0:
                subprocess.run(node_command(first, spec, host, env.job_id), check=True)
                return []
        return list(execute_group(first, waiting, force=force, kernel_name=kernel_name))

    def checkpoint(self, first: Run, waiting: Sequence[Run], spec: ClusterSpec, force: bool = False,
                   kernel_name: str = KERNEL_NAME, cwd: str | None = None):
        """Called by submitit on preemption or time-out (USR2): record why, then requeue the same job, which
        resumes the run from its checkpoint (never with ``force``: that would start it afresh)."""
        import submitit
        job_id = submitit.JobEnvironment().job_id
        if run_state(first) != "finished":
            _record_failure(first, f"job {job_id} was preempted or reached its time limit; requeued, it resumes "
                                   "from its checkpoint", time.time())
        return super().checkpoint(first, waiting, spec, False, kernel_name, cwd)


def _executor(cluster: str, folder: Path, spec: ClusterSpec, name: str):
    import submitit
    ex = submitit.AutoExecutor(folder=folder, cluster=cluster)
    ex.update_parameters(**executor_parameters(spec, name))
    return ex


def _job_summary(run: Run, status: str, job_id: str, detail: str = "") -> dict:
    return {**run.identity(), "status": status, "reason": f"job {job_id}" + (f" ({detail})" if detail else ""),
            "val_top1": None, "wall_time_s": None, "reused_from": None, "job_id": job_id}


def _record_job_end(group: Sequence[Run], info: dict, state: str, detail: str) -> None:
    """A job that ended without the record it should have written (killed, out of memory, a node failure): record
    its first run as failed with the job's state, and the runs that waited for it as failed because of it."""
    first, *waiting = group
    reason = f"job {info['job_id']} {state}" + (f": {detail}" if detail else "")
    with _run_locks(first):
        if run_state(first) not in ("finished", "failed"):
            _record_failure(first, reason, time.time())
            with open(first.out_dir / "log.txt", "a") as log:
                print(f"attnrepro: {reason}", file=log)
    reason = (read_json(first.out_dir / "metrics.json") or {}).get("reason", reason)
    for w in waiting:
        if run_state(w) not in ("finished", "failed") and run_state(first) != "finished":
            record_twin_failure(w, first.name, reason)


def _folder_summary(run: Run) -> dict:
    state = run_state(run)
    m = read_json(run.out_dir / "metrics.json") or {}
    status = "failed" if state != "finished" else ("reused" if m.get("reused_from") else "finished")
    res = {**run.identity(), **_summary_of(run, status)}
    if state not in ("finished", "failed"):
        res["reason"] = f"no record ({state})"
    return res


def submit_runs(runs: Sequence[Run], spec: ClusterSpec, *, cluster: str = "slurm", force: bool = False,
                replace: bool = False, wait: bool = False, kernel_name: str = KERNEL_NAME,
                poll_s: float = 2.0) -> list[dict]:
    """Submit one job per config that trains (see the module docstring); returns one summary per run.

    Args:
        runs: the runs of the command (as :func:`attnrepro.pipeline.grids.expand` gives them).
        spec: each job's resources (:func:`attnrepro.pipeline.cluster.cluster_spec`).
        cluster: ``slurm``, or ``local`` (submitit's local executor: jobs are processes of this machine).
        force, replace: as for :func:`attnrepro.pipeline.execution.run_all`.
        wait: block until every job of these runs has ended (those submitted now, and those an earlier call
            submitted that are still queued or running); the summaries are then the run folders' records (status
            ``finished``, ``reused`` or ``failed``), else ``submitted`` (or ``queued``/``running`` for a run whose
            earlier job is still alive) with the job id.
        poll_s: how often ``wait`` asks for the jobs' states.
    """
    if cluster not in CLUSTERS:
        raise UsageError(f"cluster {cluster!r} is not known; choose from: {', '.join(CLUSTERS)}")
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise UsageError("--executor submitit: there is no Slurm here (sbatch not found); run this on the cluster's "
                         "login node, or --submitit-cluster local to run the jobs on this machine")
    if cluster == "local" and spec.nodes > 1:
        raise UsageError(f"cluster nodes={spec.nodes}: submitit's local executor runs on this machine only; "
                         "use nodes 1, or a Slurm cluster")
    runs = [for_cluster(r, spec) for r in runs]
    p = prepare(runs, force=force, replace=replace, gpus=None if cluster == "local" else spec.gpus_per_node)
    results: dict[str, dict] = dict(p.skipped)
    trains = {r.name for r in p.will_train}
    submitted: list[tuple] = []          # (info, [first, *waiting]) of the jobs submitted now
    alive: list[tuple] = []              # and of those an earlier call submitted, still queued or running
    for first in p.firsts:
        group = [first, *p.waiting[first.name]]
        old = read_job(first)
        if old is not None:
            state, detail = job_state(old)
            if state in ("queued", "running", "unknown") and not force:   # never two jobs for one run
                note = f"state unknown: {detail}; remove its {JOB_FILE} to submit it again" if state == "unknown" \
                    else ""
                results.update({r.name: _job_summary(r, state, old["job_id"], note) for r in group})
                if state != "unknown":
                    alive.append((old, group))
                continue
            if state == "failed":
                _record_job_end(group, old, state, detail)
        if first.name not in trains:     # a finished twin exists: reuse it here, no job
            for res in execute_group(first, group[1:], force=force, kernel_name=kernel_name):
                results[res["run"]] = res
                print(progress_line(res), file=sys.stderr, flush=True)
            continue
        if not submitted:
            ensure_kernel(kernel_name)
        folder = job_folder(first)
        ex = _executor(cluster, folder, spec, f"attnrepro-{first.out_dir.parents[1].name}-{first.ablation}-"
                                              f"{first.out_dir.name}")
        job = ex.submit(RunJob(), first, group[1:], spec, force, kernel_name, os.getcwd())
        info = {"job_id": str(job.job_id), "cluster": cluster, "folder": str(folder.resolve()),
                "submitted": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "trains": first.name,
                "runs": [r.name for r in group], "nodes": spec.nodes, "gpus_per_node": spec.gpus_per_node}
        for r in group:
            r.out_dir.mkdir(parents=True, exist_ok=True)
            _write_json(r.out_dir / JOB_FILE, info)
        submitted.append((info, group))
        results.update({r.name: _job_summary(r, "submitted", info["job_id"]) for r in group})
    if submitted:
        print(f"submitted {len(submitted)} job(s) to {cluster}; their logs: {job_folder(runs[0])}", file=sys.stderr,
              flush=True)
    if wait:
        pending = submitted + alive
        while pending:
            still = []
            for info, group in pending:
                state, detail = job_state(info)
                if state in ("queued", "running") or (state == "unknown" and info["cluster"] == "slurm"):
                    still.append((info, group))      # (sacct may not know a job for a while)
                    continue
                if state != "finished" or any(run_state(r) not in ("finished", "failed") for r in group):
                    _record_job_end(group, info, state, detail)
                for r in group:
                    results[r.name] = _folder_summary(r)
                    print(progress_line(results[r.name]), file=sys.stderr, flush=True)
            pending = still
            if pending:
                time.sleep(poll_s)
    return [results[r.name] for r in runs]
