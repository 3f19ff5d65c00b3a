"""Executing runs: one notebook per run through papermill (:func:`execute`), the Jupyter kernel it runs in, and the
pool of worker processes that runs ``--jobs`` notebooks at once (:func:`run_all`).
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import multiprocessing as mp
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from .._io import read_json
from ..errors import UsageError
from . import preflight
from .grids import Run
from .preflight import check_runs
from .runstate import (_clear_dir, _failure_reason, _finished_with, _record_failure, _run_locks, _summary_of,
                       _write_json, find_twin, plan, protected, record_twin_failure, reuse, run_state)

__all__ = ["KERNEL_NAME", "KERNEL_START_ATTEMPTS", "Plan", "ensure_kernel", "execute", "execute_group", "prepare",
           "run_all", "progress_line", "summary_table"]


KERNEL_NAME = "attnrepro"


def ensure_kernel(name: str = KERNEL_NAME) -> str:
    """Make sure the Jupyter kernel ``name`` exists; install it for this interpreter into ``sys.prefix`` if not."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    ksm = KernelSpecManager()
    try:
        spec = ksm.get_kernel_spec(name)
        exe = spec.argv[0] if spec.argv else ""
        if exe and not (Path(exe).exists() or shutil.which(exe)):
            raise NoSuchKernel(name)
        return name
    except NoSuchKernel:
        pass
    try:
        from ipykernel.kernelspec import install
        install(kernel_name=name, display_name=f"{name} ({Path(sys.prefix).name})", prefix=sys.prefix)
        KernelSpecManager().get_kernel_spec(name)
    except Exception as e:  # noqa: BLE001 - any failure here means no kernel
        raise UsageError(f"the Jupyter kernel {name!r} is missing and could not be installed ({e}); install it "
                         f"with: {sys.executable} -m ipykernel install --sys-prefix --name {name}") from None
    return name


#: the kernel's own log (not the notebook's output, which goes to log.txt): no start-up chatter, and no traceback
#: on the terminal when Ctrl-C closes the kernel's sockets under a reply it is sending
KERNEL_LOG_LEVEL = "--IPKernelApp.log_level=CRITICAL"

#: how often a kernel that dies before it answers is started again (it has run no cell, so this is safe)
KERNEL_START_ATTEMPTS = 3


def _kernel_died_at_start(e: BaseException) -> bool:
    # jupyter_client's KernelClient.wait_for_ready: the kernel process exited before it answered kernel_info
    return isinstance(e, RuntimeError) and "died before replying to kernel_info" in str(e)


@contextlib.contextmanager
def _kernel_config():
    """The kernel manager's config for one notebook: ZeroMQ over Unix sockets in a fresh private folder.

    With TCP, each process picks "free" ports and the kernel binds them later; two workers starting kernels at once
    can pick the same port, and one kernel dies (``Address already in use``). Socket files in a folder of their own
    cannot collide. Falls back to TCP where ZeroMQ has no IPC transport (Windows).
    """
    import tempfile
    import zmq
    from traitlets.config import Config
    if not zmq.has("ipc"):
        yield Config()
        return
    base = tempfile.gettempdir()
    if len(base) > 60 and os.path.isdir("/tmp"):   # a Unix socket path has at most ~104 bytes
        base = "/tmp"
    with tempfile.TemporaryDirectory(prefix="attnrepro-kernel-", dir=base) as d:
        yield Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(d, "kernel")}})


def _papermill(run: Run, kernel_name: str, start_timeout: int) -> None:
    import logging
    import papermill as pm
    logging.getLogger("papermill").setLevel(logging.ERROR)
    params = {**run.config.to_dict(), **run.options, "out_dir": str(run.out_dir.resolve())}
    with open(run.out_dir / "log.txt", "a") as log:     # appended: a resumed run keeps its earlier attempts' lines
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        print(f"attnrepro: attempt started {stamp} (config {run.config.hash()})", file=log, flush=True)
        for attempt in range(1, KERNEL_START_ATTEMPTS + 1):
            try:
                with _kernel_config() as config:
                    pm.execute_notebook(str(run.notebook), str(run.out_dir / "notebook.ipynb"), parameters=params,
                                        kernel_name=kernel_name, progress_bar=False, log_output=False,
                                        stdout_file=log, stderr_file=log, start_timeout=start_timeout,
                                        cwd=os.getcwd(), config=config,
                                        extra_arguments=[KERNEL_LOG_LEVEL])
                return
            except RuntimeError as e:
                if not _kernel_died_at_start(e):
                    raise
                if attempt == KERNEL_START_ATTEMPTS:
                    raise RuntimeError(f"the kernel died before it replied, {attempt} times in a row: {e}") from e
                print(f"attnrepro: the kernel died before it replied ({e}); starting another "
                      f"(attempt {attempt + 1} of {KERNEL_START_ATTEMPTS})", file=log, flush=True)


def execute(run: Run, *, force: bool = False, kernel_name: str = KERNEL_NAME, start_timeout: int = 180,
            reuse_from: Path | None | bool = True) -> dict:
    """Execute one run's notebook under its locks. Returns a summary dict (name, status, reason, top1, time).

    Status ``skipped`` (this folder finished this config), ``reused`` (another folder of the preset finished the
    same config: its record is copied, see :func:`reuse`), ``finished`` or ``failed``. ``reuse_from``: True looks for
    such a folder (not with ``force``), a Path names it (the pipeline passes the twin it has just run), False never
    reuses. Never raises for a failing run: the failure is recorded in the run folder and returned.

    Every attempt starts from the config it is given: the record of an earlier failed attempt (``metrics.json``) is
    removed and ``config.json`` rewritten, so a key left out of the hash (``device``, ``data_dir``, ``num_workers``)
    lets the run resume its checkpoint but never brings back an old value.
    """
    summary = run.identity()
    with _run_locks(run):
        state = run_state(run)
        if state == "finished" and not force:
            return {**summary, **_summary_of(run, "skipped")}
        if not force and (why := protected(run)) is not None:
            raise UsageError(f"{run.name}: {why}; not replaced (attnrepro run --replace replaces it)")
        src = None
        if isinstance(reuse_from, Path):
            src = reuse_from if _finished_with(reuse_from, run.config.hash()) is not None else None
        elif reuse_from and not force:
            src = find_twin(run)
        if src is not None:
            reuse(run, src)
            return {**summary, **_summary_of(run, "reused")}
        if state in ("stale", "corrupt") or force:
            _clear_dir(run.out_dir)
        run.out_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            (run.out_dir / "metrics.json").unlink()     # an earlier attempt's record: this attempt writes its own
        _write_json(run.out_dir / "config.json", {**run.config.to_dict(), "config_hash": run.config.hash()})
        _write_json(run.out_dir / "variant.json", run.variant_info())
        started = time.time()
        try:
            _papermill(run, kernel_name, start_timeout)
        except BaseException as e:  # noqa: BLE001 - a kernel death or a cell error is a failed run, not a crash
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                # Ctrl-C, or a cluster job stopped to be requeued (submitit exits from its signal handler; the
                # job's own record of why comes first, see pipeline.jobs.RunJob.checkpoint)
                why = "interrupted (Ctrl-C); the next attnrepro run resumes it" if isinstance(e, KeyboardInterrupt) \
                    else f"the job exited ({e.code}) before the run ended; a requeued job resumes it"
                if _finished_with(run.out_dir, run.config.hash()) is None:   # training done: it stays finished
                    _record_failure(run, why, started)
                raise
            _record_failure(run, _failure_reason(e), started)
            return {**summary, **_summary_of(run, "failed")}
        m = read_json(run.out_dir / "metrics.json")
        if not m or m.get("status") != "finished" or m.get("config_hash") != run.config.hash():
            _record_failure(run, "the notebook finished without writing a finished metrics.json for this config",
                            started)
            return {**summary, **_summary_of(run, "failed")}
        return {**summary, **_summary_of(run, "finished")}


# process-pool plumbing: each worker takes a slot number, which picks its GPUs
_SLOT: dict = {}


def _init_worker(slots, env: dict) -> None:
    slot = slots.get()
    os.environ.update(env.get(slot, {}))
    _SLOT["slot"] = slot


def _job_error(run: Run, e: BaseException) -> dict:
    return {**run.identity(), "status": "failed", "reason": f"runner error: {_failure_reason(e)}", "val_top1": None,
            "wall_time_s": None, "traceback": traceback.format_exc()}


def _execute_job(run: Run, force: bool, kernel_name: str, reuse_from: Path | None | bool = True) -> dict:
    try:
        return execute(run, force=force, kernel_name=kernel_name, reuse_from=reuse_from)
    except Exception as e:  # noqa: BLE001 - e.g. a lock or file-system error: report it, keep the pool going
        return _job_error(run, e)


def _twin_failed_job(run: Run, twin: str, reason: str | None) -> dict:
    try:
        return record_twin_failure(run, twin, reason)
    except Exception as e:  # noqa: BLE001
        return _job_error(run, e)


def _job_envs(jobs: int) -> dict[int, dict]:
    """Per-slot environment: CPU threads split between jobs; GPUs split when there are at least ``jobs``."""
    cores = os.cpu_count() or 1
    env: dict[int, dict] = {i: {} for i in range(jobs)}
    for i in range(jobs):
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            if var not in os.environ:
                env[i][var] = str(max(1, cores // jobs))
    ngpu = preflight.gpu_count()
    if jobs > 1 and ngpu >= jobs:
        vis = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = [d.strip() for d in vis.split(",")] if vis else [str(i) for i in range(ngpu)]
        per = ngpu // jobs
        for i in range(jobs):
            env[i]["CUDA_VISIBLE_DEVICES"] = ",".join(ids[i * per:(i + 1) * per])
    return env


def _make_pool(workers: int, envs: dict[int, dict]) -> cf.Executor:
    """``workers`` processes (spawned: each starts its kernels from a clean interpreter), each with its slot's env."""
    ctx = mp.get_context("spawn")
    slots = ctx.Manager().Queue()
    for i in range(len(envs)):
        slots.put(i)
    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                  initargs=(slots, envs))


@dataclasses.dataclass
class Plan:
    """What a command will do with its runs, once every check before the start has passed (:func:`prepare`).

    Attributes:
        firsts: the first run of each config that is not finished (it trains, or reuses a finished twin).
        waiting: for each first (by name), the runs of its config that reuse it once it has finished.
        skipped: the summaries of the runs that are up to date.
        will_train: the firsts that train (no finished twin to reuse).
    """
    firsts: list[Run]
    waiting: dict[str, list[Run]]
    skipped: dict[str, dict]
    will_train: list[Run]

    @property
    def todo(self) -> int:
        return len(self.firsts) + sum(len(w) for w in self.waiting.values())


def prepare(runs: Sequence[Run], *, force: bool = False, replace: bool = False, jobs: int = 1,
            gpus: int | None = None) -> Plan:
    """Every check before anything starts (or is submitted), then the plan: which runs train, which reuse.

    A folder holding a record this would replace (a finished run of another config, or a corrupt record:
    :func:`protected`) raises :class:`UsageError`, unless ``replace`` (those folders are emptied once the checks have
    passed) or ``force``. Every run that will train is checked (:func:`check_runs`; ``gpus``: the GPUs each run gets
    where it runs, when that is not this machine). Runs with the same config train once (:func:`plan`).
    """
    held = [] if force else [(r, why) for r in runs if (why := protected(r)) is not None]
    if held and not replace:
        lines = "\n".join(f"  {r.out_dir}: {why}" for r, why in held[:10])
        more = f"\n  ... and {len(held) - 10} more" if len(held) > 10 else ""
        raise UsageError(f"{len(held)} run folder(s) hold records this command would replace:\n{lines}{more}\n"
                         "nothing was run. Did the preset or a grid change? To replace those records: attnrepro "
                         "run ... --replace (--force re-runs everything); to keep them: --runs-dir DIR")
    firsts, waiting = plan(runs, force=force)
    todo = {r.name for r in firsts} | {r.name for ws in waiting.values() for r in ws}
    skipped = {r.name: {**r.identity(), **_summary_of(r, "skipped")} for r in runs if r.name not in todo}
    will_train = [r for r in firsts if force or find_twin(r) is None]
    check_runs(will_train, jobs=jobs, gpus=gpus)
    for r, _ in held:                       # asked for (--replace), and every check has passed
        with _run_locks(r):
            if protected(r) is not None:
                _clear_dir(r.out_dir)
    if skipped:
        print(f"{len(skipped)} run(s) up to date (skipped), {len(todo)} to run", file=sys.stderr, flush=True)
    return Plan(firsts, waiting, skipped, will_train)


def execute_group(first: Run, waiting: Sequence[Run], *, force: bool = False,
                  kernel_name: str = KERNEL_NAME) -> Iterator[dict]:
    """Execute ``first``, then the runs of its config that wait for it: each reuses it, or is recorded as failed
    with its reason when it failed. Yields one summary per run, as each ends; never raises for a failing run."""
    res = _execute_job(first, force, kernel_name)
    yield res
    for fn, *args in _then(first, res, waiting, force, kernel_name):
        yield fn(*args)


def _then(first: Run, res: dict, waiting: Sequence[Run], force: bool, kernel_name: str) -> list[tuple]:
    """The jobs of the runs that waited for ``first``: reuse it, or record that it failed."""
    if res["status"] in ("finished", "skipped", "reused"):
        return [(_execute_job, w, force, kernel_name, first.out_dir) for w in waiting]
    return [(_twin_failed_job, w, first.name, res.get("reason")) for w in waiting]


def run_all(runs: Sequence[Run], *, jobs: int = 1, force: bool = False, kernel_name: str = KERNEL_NAME,
            progress: bool = True, replace: bool = False) -> list[dict]:
    """Execute ``runs`` (skipping finished ones unless ``force``) in a pool of ``jobs`` worker processes on this
    machine; returns one summary dict per run. Nothing starts before :func:`prepare`'s checks have passed.
    """
    from tqdm.auto import tqdm
    if jobs < 1:
        raise UsageError(f"--jobs {jobs}: must be >= 1")
    p = prepare(runs, force=force, replace=replace, jobs=jobs)
    firsts, waiting, results = p.firsts, p.waiting, dict(p.skipped)
    if p.will_train:
        ensure_kernel(kernel_name)
    bar = tqdm(total=p.todo, desc="runs", unit="run", disable=not progress or not p.todo, file=sys.stderr,
               dynamic_ncols=True)

    def done(res: dict) -> None:
        results[res["run"]] = res
        bar.write(progress_line(res), file=sys.stderr)
        bar.update(1)

    envs = _job_envs(jobs)
    try:
        if jobs == 1 or len(firsts) <= 1:
            with _environ(envs[0]):
                for r in firsts:
                    for res in execute_group(r, waiting[r.name], force=force, kernel_name=kernel_name):
                        done(res)
        else:
            with _make_pool(min(jobs, len(firsts)), envs) as pool:
                pending = {pool.submit(_execute_job, r, force, kernel_name): r for r in firsts}
                while pending:
                    finished, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                    for fut in finished:
                        r = pending.pop(fut)
                        res = fut.result()
                        done(res)
                        if r.name in waiting:
                            for fn, *args in _then(r, res, waiting[r.name], force, kernel_name):
                                pending[pool.submit(fn, *args)] = args[0]
                            waiting.pop(r.name)
    finally:
        bar.close()
    return [results[r.name] for r in runs]


@contextlib.contextmanager
def _environ(env: Mapping[str, str]):
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def progress_line(res: Mapping) -> str:
    """One line of progress for a run that has ended (status, run, top-1, time, where it was reused from, why)."""
    t = res.get("wall_time_s")
    extra = f" val_top1={res['val_top1']:.2f}" if isinstance(res.get("val_top1"), (int, float)) else ""
    extra += f" ({t:.0f}s)" if isinstance(t, (int, float)) and res["status"] != "reused" else ""
    extra += f" from {res['reused_from']}" if res["status"] == "reused" else ""
    why = f": {res.get('reason')}" if res["status"] == "failed" else ""
    return f"{res['status']:>8}  {res['run']}{extra}{why}"


def summary_table(results: Sequence[Mapping]) -> str:
    rows = [("run", "status", "val_top1", "time_s", "reason")]
    for r in results:
        top1 = r.get("val_top1")
        t = r.get("wall_time_s")
        note = (r.get("reason") or "") if r["status"] != "reused" else f"same config as {r.get('reused_from')}"
        rows.append((r["run"], r["status"], f"{top1:.2f}" if isinstance(top1, (int, float)) else "-",
                     f"{t:.0f}" if isinstance(t, (int, float)) and r["status"] != "reused" else "-", note[:100]))
    w = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(f"{a:<{w[0]}}  {b:<{w[1]}}  {c:>{w[2]}}  {d:>{w[3]}}  {e}".rstrip() for a, b, c, d, e in rows)
