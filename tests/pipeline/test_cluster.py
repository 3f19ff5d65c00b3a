"""The cluster route (``attnrepro run --executor submitit``): the preset's ``cluster:`` section, the sbatch text and
the torchrun rendezvous it gives, the job records, and (slow) submitit's local executor against the process pool
and a job killed mid-run that resumes when it is submitted again. No Slurm here: the sbatch text is checked as
text, and the local executor runs the jobs as processes of this machine.
"""
from __future__ import annotations

import json
import signal
import time
import types
from pathlib import Path

import pytest
import yaml

from attnrepro import pipeline
from attnrepro.config import ConfigError
from attnrepro.pipeline import cluster, execution, jobs

from test_pipeline import NB, TINY, main, nbdir  # noqa: F401 - nbdir is a fixture

submitit = pytest.importorskip("submitit")


def _sbatch_lines(text: str) -> set[str]:
    return {ln for ln in text.splitlines() if ln.startswith("#SBATCH")}


# ---------------------------------------------------------------------------- the cluster: section
def test_cifar100_sbatch_requests_exactly_what_the_preset_declares(tmp_path):
    declared = yaml.safe_load((NB / "presets" / "cifar100.yaml").read_text())["cluster"]
    spec = pipeline.load_preset(NB, "cifar100")["cluster_spec"]
    text = cluster.sbatch_text(spec, tmp_path / "jobs", name="attnrepro-cifar100")
    wanted = {f"#SBATCH --partition={declared['partition']}", f"#SBATCH --gpus-per-node={declared['gpus_per_node']}",
              f"#SBATCH --cpus-per-task={declared['cpus_per_task']}", f"#SBATCH --mem={declared['mem_gb']}GB",
              f"#SBATCH --time={declared['timeout_min']}", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1",
              "#SBATCH --job-name=attnrepro-cifar100"}
    # submitit's own lines: its logs in the job folder, USR2 before the time limit (requeue), its wckey
    own = {f"#SBATCH --output={tmp_path / 'jobs'}/%j_0_log.out", f"#SBATCH --error={tmp_path / 'jobs'}/%j_0_log.err",
           "#SBATCH --open-mode=append", "#SBATCH --signal=USR2@90", "#SBATCH --wckey=submitit"}
    assert _sbatch_lines(text) == wanted | own, text
    assert "submitit.core._submit" in text.splitlines()[-1]
    # --cluster overrides the preset, key by key
    over = cluster.cluster_spec(declared, [("partition", "h200"), ("mem_gb", "128"), ("timeout_min", "60")])
    lines = _sbatch_lines(cluster.sbatch_text(over, tmp_path / "jobs", name="attnrepro-cifar100"))
    assert {"#SBATCH --partition=h200", "#SBATCH --mem=128GB", "#SBATCH --time=60"} <= lines
    assert f"#SBATCH --gpus-per-node={declared['gpus_per_node']}" in lines


def test_a_multi_node_request_gives_a_torchrun_rendezvous(tmp_path):
    pre = pipeline.load_preset(NB, "imagenet")
    spec = pre["cluster_spec"]
    assert spec.nodes == 2 and spec.gpus_per_node == 8
    run = pipeline.expand(["baseline"], "imagenet", {"data_dir": "/data/imagenet"}, nb_dir=NB, runs_dir=tmp_path)[0]
    run = cluster.for_cluster(run, spec)
    assert run.options["nproc_per_node"] == 8 and run.options["torchrun_args"] == "--nnodes=2"
    cmd = cluster.node_command(run, spec, "gpu017", "4242")
    text = " ".join(cmd)
    port = cluster.RDZV_PORT_BASE + 4242
    assert (f"-m torch.distributed.run --nproc_per_node=8 --nnodes=2 --rdzv_backend=c10d "
            f"--rdzv_endpoint=gpu017:{port} --rdzv_id=attnrepro-4242 -m attnrepro train --no-progress") in text, text
    assert "--standalone" not in cmd and cmd[-2:] == ["--out", str(run.out_dir.resolve())]
    assert "#SBATCH --nodes=2" in cluster.sbatch_text(spec, tmp_path / "jobs")
    # the first node's notebook starts the same command (pipeline.notebook.train), so every node joins one rendezvous
    from attnrepro.pipeline.notebook import torchrun_command
    assert torchrun_command(run.config, run.out_dir.resolve(), 8, cluster.rendezvous_args(2, "gpu017", "4242")) == cmd
    # the preset's own nproc_per_node (4 of each node's 8 GPUs) is every node's, the first node's notebook included
    four = pipeline.expand(["baseline"], "imagenet", {"data_dir": "/d", "nproc_per_node": "4"}, nb_dir=NB,
                           runs_dir=tmp_path)[0]
    four = cluster.for_cluster(four, spec)
    assert four.options["nproc_per_node"] == 4 and "--nproc_per_node=4" in cluster.node_command(four, spec, "h", "1")
    # a preset that says both how to span machines is refused
    twice = pipeline.expand(["baseline"], "imagenet", {"data_dir": "/d", "torchrun_args": "--nnodes 2"}, nb_dir=NB,
                            runs_dir=tmp_path)[0]
    with pytest.raises(ConfigError, match="torchrun_args"):
        cluster.for_cluster(twice, spec)


@pytest.mark.parametrize("section, argv, words", [
    ({"gpus": 1}, [], ["unknown key 'gpus'", "gpus_per_node", "partition", "timeout_min"]),
    ({"nodes": 0}, [], ["nodes=0", ">= 1"]),
    (None, ["--cluster", "memory", "8"], ["--cluster: unknown key 'memory'", "mem_gb"]),
    (None, ["--cluster", "mem_gb", "lots"], ["mem_gb='lots'", "a number"]),
    (None, ["--cluster", "nodes", "2", "--submitit-cluster", "local"], ["local executor", "nodes"]),
    (None, ["--executor", "local", "--cluster", "nodes", "2"], ["--cluster is for --executor submitit"]),
])
def test_bad_cluster_input_exits_2_before_anything_is_submitted(section, argv, words, nbdir, tmp_path, monkeypatch,
                                                                 capsys):
    pre = {"seeds": [0], "base": TINY, **({"cluster": section} if section else {})}
    (nbdir / "presets" / "tiny.yaml").write_text(yaml.safe_dump(pre))
    submitted: list = []
    monkeypatch.setattr(jobs, "_executor", lambda *a: submitted.append(a))
    argv = ["run", "kernel", "--preset", "tiny", "--notebooks-dir", nbdir, "--runs-dir", tmp_path / "runs",
            "--executor", "submitit", "--submitit-cluster", "local", *argv]
    assert main(argv, monkeypatch) == 2
    err = capsys.readouterr().err
    assert submitted == [] and not (tmp_path / "runs").exists()
    for w in words:
        assert w in err, err


@pytest.mark.parametrize("sbatch, argv, words", [
    (None, [], ["no Slurm here", "--submitit-cluster local"]),
    ("/usr/bin/sbatch", ["-p", "device", "cuda"], ["cannot start here, so none was started", "gpus_per_node=0"]),
    ("/usr/bin/sbatch", ["-p", "device", "cuda", "--cluster", "gpus_per_node", "1", "-p", "dataset", "fashion_mnist",
                         "-p", "data_dir", "{tmp}/no"],
     ["cannot start here", "{tmp}/no"]),
])
def test_slurm_submission_is_checked_first(sbatch, argv, words, nbdir, tmp_path, monkeypatch, capsys):
    """No Slurm, a cuda run whose job asks for no GPU, data the nodes will not find: exit 2, nothing submitted."""
    submitted: list = []
    monkeypatch.setattr(jobs, "_executor", lambda *a: submitted.append(a))
    monkeypatch.setattr(jobs.shutil, "which", lambda name: sbatch)
    argv = ["run", "kernel", "--preset", "tiny", "--notebooks-dir", nbdir, "--runs-dir", tmp_path / "runs",
            "--executor", "submitit", *[str(a).replace("{tmp}", str(tmp_path)) for a in argv]]
    assert main(argv, monkeypatch) == 2
    err = capsys.readouterr().err
    assert submitted == [] and not (tmp_path / "runs").exists()
    for w in words:
        assert w.replace("{tmp}", str(tmp_path)) in err, err


def test_slurm_preflight_judges_the_gpus_the_job_requests(tmp_path, monkeypatch):
    """On a login node without a GPU, a cuda run is fine when its job requests GPUs, and refused when it does not."""
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    runs = pipeline.expand(["kernel"], "cifar100", {}, nb_dir=NB, runs_dir=tmp_path)[:1]
    here = " ".join(pipeline.run_problems(runs))
    assert "no CUDA GPU" in here
    assert "device" not in " ".join(p for p in pipeline.run_problems(runs, gpus=1) if "cuda" in p.lower())
    assert "gpus_per_node=0" in " ".join(pipeline.run_problems(runs, gpus=0))


# ---------------------------------------------------------------------------- jobs, without a cluster
class _FakeJob:
    def __init__(self, job_id):
        self.job_id = job_id


class _FakeExecutor:
    """submitit's executor, recording what it is given (the jobs are never run)."""

    def __init__(self, log):
        self.log = log

    def submit(self, fn, first, waiting, spec, force, kernel_name, cwd):
        self.log.append((fn, first.name, [w.name for w in waiting], force))
        return _FakeJob(str(1000 + len(self.log)))


def _submit_env(monkeypatch, state="finished"):
    log: list = []
    monkeypatch.setattr(jobs, "_executor", lambda *a: _FakeExecutor(log))
    monkeypatch.setattr(jobs, "ensure_kernel", lambda name=None: name)
    monkeypatch.setattr(jobs, "job_state", lambda info: state if isinstance(state, tuple) else (state, ""))
    return log


def test_one_job_per_config_and_a_live_job_is_not_submitted_twice(nbdir, tmp_path, monkeypatch):
    runs = pipeline.expand(["kernel", "placement"], "tiny", {}, nb_dir=nbdir, runs_dir=tmp_path)
    spec = cluster.ClusterSpec()
    log = _submit_env(monkeypatch)
    res = jobs.submit_runs(runs, spec, cluster="local")
    hashes = {r.config.hash() for r in runs}
    assert len(log) == len(hashes) < len(runs)         # kernel/gaussian and placement/all: one config, one job
    twin = next(entry for entry in log if entry[2])
    assert twin[1] == "kernel/gaussian-s0" and twin[2] == ["placement/all-s0"] and isinstance(twin[0], jobs.RunJob)
    assert {r["status"] for r in res} == {"submitted"}
    gauss, alls = (next(r for r in runs if r.name == n) for n in ("kernel/gaussian-s0", "placement/all-s0"))
    assert jobs.read_job(gauss)["job_id"] == jobs.read_job(alls)["job_id"] == "1001"
    assert jobs.read_job(gauss)["runs"] == ["kernel/gaussian-s0", "placement/all-s0"]
    # a second call while the jobs are queued submits nothing
    log.clear()
    monkeypatch.setattr(jobs, "job_state", lambda info: ("queued", "PENDING"))
    res = jobs.submit_runs(runs, spec, cluster="local")
    assert log == [] and {r["status"] for r in res} == {"queued"}
    # nor when Slurm cannot say what became of them (sacct down, the job too old): the user decides
    monkeypatch.setattr(jobs, "job_state", lambda info: ("unknown", "UNKNOWN"))
    res = jobs.submit_runs(runs, spec, cluster="local")
    assert log == [] and {r["status"] for r in res} == {"unknown"} and "job.json" in res[0]["reason"]


def test_list_shows_each_runs_job_beside_its_folder_state(nbdir, tmp_path, monkeypatch, capsys):
    from test_pipeline import _fake_papermill
    runs = [r for r in pipeline.expand(["kernel", "placement"], "tiny", {}, nb_dir=nbdir, runs_dir=tmp_path)
            if r.name in ("kernel/gaussian-s0", "placement/all-s0", "kernel/cauchy-s0")]
    _submit_env(monkeypatch, state=("running", "RUNNING"))
    jobs.submit_runs(runs, cluster.ClusterSpec(), cluster="local")
    monkeypatch.setattr(execution, "_papermill", _fake_papermill([]))
    list(execution.execute_group(runs[0], [r for r in runs if r.name == "placement/all-s0"]))   # the job ran
    states = {"1001": ("finished", ""), "1002": ("running", "RUNNING")}
    from attnrepro.pipeline import cli as pipeline_cli
    monkeypatch.setattr(pipeline_cli, "job_state", lambda info: states[info["job_id"]])
    assert main(["list", "kernel", "placement", "--preset", "tiny", "--notebooks-dir", nbdir, "--runs-dir", tmp_path],
                monkeypatch) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()}
    assert lines["kernel/gaussian-s0"].split()[1:5] == ["finished", "job", "1001", "finished"]
    assert lines["placement/all-s0"].split()[1:5] == ["finished", "job", "1001", "finished"]
    assert "(reused from tiny/kernel/gaussian-s0)" in lines["placement/all-s0"]
    assert lines["kernel/cauchy-s0"].split()[1:5] == ["new", "job", "1002", "running"]
    assert "job" not in lines["kernel/uniform-s0"]


def test_a_job_that_died_is_recorded_with_its_state_and_submitted_again(nbdir, tmp_path, monkeypatch):
    run = pipeline.expand(["kernel"], "tiny", {}, nb_dir=nbdir, runs_dir=tmp_path)[0]
    log = _submit_env(monkeypatch)
    jobs.submit_runs([run], cluster.ClusterSpec(), cluster="local")
    run.out_dir.joinpath("config.json").write_text(json.dumps({**run.config.to_dict(),
                                                               "config_hash": run.config.hash()}))
    monkeypatch.setattr(jobs, "job_state", lambda info: ("failed", "OUT_OF_MEMORY"))
    res = jobs.submit_runs([run], cluster.ClusterSpec(), cluster="local")
    assert len(log) == 2 and log[1][3] is False and res[0]["status"] == "submitted"
    assert "attnrepro: job 1001 failed: OUT_OF_MEMORY" in (run.out_dir / "log.txt").read_text()
    m = json.loads((run.out_dir / "metrics.json").read_text())
    assert m["status"] == "failed" and m["reason"] == "job 1001 failed: OUT_OF_MEMORY"
    assert jobs.read_job(run)["job_id"] == "1002"


def test_wait_polls_until_every_job_has_ended_and_records_a_dead_one(nbdir, tmp_path, monkeypatch, capsys):
    """--wait: each job is asked for its state until it has ended; a job that finished has written its runs'
    records (here: the job's own code, execute_group, run when the fake job 'ends'); a job that died (a node
    failure) gets its runs recorded as failed with the job's state, the twin waiting for it too."""
    from test_pipeline import _fake_papermill
    runs = pipeline.expand(["kernel", "placement"], "tiny", {}, nb_dir=nbdir, runs_dir=tmp_path)
    by_name = {r.name: r for r in runs}
    _submit_env(monkeypatch)
    monkeypatch.setattr(execution, "_papermill", _fake_papermill([]))
    asked: dict[str, int] = {}

    def fake_state(info):
        n = asked[info["job_id"]] = asked.get(info["job_id"], 0) + 1
        if n < 3:
            return ("queued", "PENDING") if n == 1 else ("running", "RUNNING")
        if info["job_id"] == "1001":
            return "failed", "NODE_FAIL"
        if n == 3:      # the job runs now, as RunJob would
            group = [by_name[name] for name in info["runs"]]
            list(execution.execute_group(group[0], group[1:]))
        return "finished", ""
    monkeypatch.setattr(jobs, "job_state", fake_state)
    res = {r["run"]: r for r in jobs.submit_runs(runs, cluster.ClusterSpec(), cluster="local", wait=True, poll_s=0)}
    assert set(asked.values()) == {3}                 # every job asked until it ended, and no more
    assert res["kernel/gaussian-s0"]["status"] == "failed" and res["kernel/gaussian-s0"]["reason"] == \
        "job 1001 failed: NODE_FAIL"
    assert res["placement/all-s0"]["status"] == "failed" and "kernel/gaussian-s0" in res["placement/all-s0"]["reason"]
    others = {k: v["status"] for k, v in res.items() if k not in ("kernel/gaussian-s0", "placement/all-s0")}
    assert set(others.values()) == {"finished"}, others
    assert "NODE_FAIL" in (tmp_path / "tiny" / "kernel" / "gaussian-s0" / "log.txt").read_text()


def test_a_preempted_job_records_why_and_requeues_without_force(nbdir, tmp_path, monkeypatch):
    run = pipeline.expand(["kernel"], "tiny", {}, nb_dir=nbdir, runs_dir=tmp_path)[0]
    run.out_dir.mkdir(parents=True)
    monkeypatch.setattr(submitit, "JobEnvironment", lambda: types.SimpleNamespace(job_id="77"))
    job = jobs.RunJob()
    delayed = job.checkpoint(run, [], cluster.ClusterSpec(), True, "attnrepro", "/somewhere")
    assert delayed.function is job and delayed.args[3] is False           # a requeue resumes, never starts afresh
    assert delayed.args[0] is run and delayed.args[5] == "/somewhere"
    m = json.loads((run.out_dir / "metrics.json").read_text())
    assert m["status"] == "failed" and "job 77 was preempted or reached its time limit; requeued" in m["reason"]


def test_a_job_exit_inside_a_run_is_recorded_and_passed_on(nbdir, tmp_path, monkeypatch):
    """submitit requeues by sys.exit from its signal handler: execute() must not swallow it as a failed run (the
    job would end 'successfully' and never be requeued), and keeps the job's own reason."""
    run = pipeline.expand(["kernel"], "tiny", {}, nb_dir=nbdir, runs_dir=tmp_path)[0]

    def exits(run, kernel_name, start_timeout):
        raise SystemExit(144)
    monkeypatch.setattr(execution, "_papermill", exits)
    with pytest.raises(SystemExit):
        pipeline.execute(run)
    m = json.loads((run.out_dir / "metrics.json").read_text())
    assert m["status"] == "failed" and "requeued job resumes it" in m["reason"]


def test_job_state_reads_submitits_result_and_a_dead_local_job(tmp_path):
    from submitit.core.utils import JobPaths, cloudpickle_dump
    folder = tmp_path / "jobs"
    folder.mkdir()
    cloudpickle_dump(("error", "Traceback...\nValueError: the job broke"), JobPaths(folder, "11", 0).result_pickle)
    cloudpickle_dump(("success", []), JobPaths(folder, "12", 0).result_pickle)
    assert jobs.job_state({"job_id": "11", "cluster": "local", "folder": str(folder)}) == \
        ("failed", "ValueError: the job broke")
    assert jobs.job_state({"job_id": "12", "cluster": "slurm", "folder": str(folder)}) == ("finished", "")
    dead = jobs.job_state({"job_id": str(2 ** 22 + 12345), "cluster": "local", "folder": str(folder)})
    assert dead[0] == "failed" and "without a result" in dead[1]


# ---------------------------------------------------------------------------- submitit's local executor (slow)
def _metrics(run_dir: Path) -> tuple[dict, list[dict]]:
    m = json.loads((run_dir / "metrics.json").read_text())
    lines = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    timing = ("images_per_s", "epoch_time_s")
    return m, [{k: v for k, v in ln.items() if k not in timing} for ln in lines]


@pytest.mark.slow
def test_local_submitit_jobs_give_the_pools_metrics_and_a_second_call_skips(tmp_path, monkeypatch, capsys):
    """The smoke preset's kernel ablation (its reference variant: one run per executor keeps this lean) as a
    submitit job and in the process pool: the same seed, CPU and thread count give the same numbers."""
    argv = ["run", "kernel", "--preset", "smoke", "--variants", "gaussian", "--notebooks-dir", NB]
    assert main([*argv, "--runs-dir", tmp_path / "pool", "--executor", "local"], monkeypatch) == 0
    sub = [*argv, "--runs-dir", tmp_path / "jobs", "--executor", "submitit", "--submitit-cluster", "local", "--wait"]
    assert main(sub, monkeypatch) == 0
    out = capsys.readouterr()
    assert "kernel/gaussian-s0  finished" in out.out, out
    run = Path("smoke/kernel/gaussian-s0")
    pool, (job_m, job_lines) = _metrics(tmp_path / "pool" / run), _metrics(tmp_path / "jobs" / run)
    assert job_m["status"] == "finished" and job_m["final"] == pool[0]["final"]
    assert job_lines == pool[1]
    assert job_m["env"]["num_threads"] == pool[0]["env"]["num_threads"]
    info = json.loads((tmp_path / "jobs" / run / "job.json").read_text())
    assert info["cluster"] == "local" and (tmp_path / "jobs" / ".submitit" / "smoke").is_dir()
    # a second call skips everything: nothing is submitted
    assert main(sub, monkeypatch) == 0
    out = capsys.readouterr()
    assert "kernel/gaussian-s0  skipped" in out.out and "submitted" not in out.err, out
    assert json.loads((tmp_path / "jobs" / run / "job.json").read_text()) == info
    assert main(["list", "kernel", "--preset", "smoke", "--variants", "gaussian", "--notebooks-dir", NB,
                 "--runs-dir", tmp_path / "jobs"], monkeypatch) == 0
    assert f"job {info['job_id']} finished" in capsys.readouterr().out


def _kill_tree(pid: int) -> None:
    """SIGKILL a local job: its controller, the task, the notebook's kernel (a node failure, as far as the run
    folder can tell)."""
    import psutil
    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


@pytest.mark.slow
def test_a_killed_job_resumes_from_its_checkpoint_when_submitted_again(nbdir, tmp_path, monkeypatch, capsys):
    epochs = 4      # about 3 s each here: the kill lands after the first checkpoint, seconds before the end
    base = {"dataset": "fashion_mnist", "train_subset": 400, "val_split": 0.005, "model": "resnet20", "width": 0.25,
            "heads": 1, "epochs": epochs, "batch_size": 50, "eval_batch_size": 500, "device": "cpu"}
    (nbdir / "presets" / "tiny.yaml").write_text(yaml.safe_dump({"seeds": [0], "base": base}))
    argv = ["run", "kernel", "--preset", "tiny", "--variants", "gaussian", "--notebooks-dir", nbdir,
            "--runs-dir", tmp_path / "runs", "--executor", "submitit", "--submitit-cluster", "local"]
    assert main(argv, monkeypatch) == 0
    run_dir = tmp_path / "runs" / "tiny" / "kernel" / "gaussian-s0"
    job_id = int(json.loads((run_dir / "job.json").read_text())["job_id"])
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoint.pt").exists():        # the first epoch's checkpoint (written atomically)
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        assert not (run_dir / "metrics.json").exists(), (run_dir / "log.txt").read_text()
        time.sleep(0.05)
    _kill_tree(job_id)
    import torch
    done = torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"]
    before = _metrics_lines(run_dir)
    assert 1 <= done < epochs and not (run_dir / "metrics.json").exists(), "the job was not killed mid-run"
    assert main([*argv, "--wait"], monkeypatch) == 0
    capsys.readouterr()
    m, lines = json.loads((run_dir / "metrics.json").read_text()), _metrics_lines(run_dir)
    assert m["status"] == "finished" and m["resumed_from_epoch"] == done
    assert [ln["epoch"] for ln in lines] == list(range(1, epochs + 1))   # each epoch once
    assert lines[:done] == before[:done]        # the epochs before the kill were not trained again
    log = (run_dir / "log.txt").read_text()
    assert log.count("attnrepro: attempt started") == 2
    assert f"attnrepro: job {job_id} failed: its process ended without a result" in log
    assert json.loads((run_dir / "job.json").read_text())["job_id"] != str(job_id)


def _metrics_lines(run_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]


def test_the_jobs_folder_is_not_a_preset(tmp_path):
    """submitit's folder (``<runs>/.submitit/``) sits beside the preset folders: the report must not count it."""
    from attnrepro.analysis import results
    (tmp_path / "smoke" / "kernel" / "gaussian-s0").mkdir(parents=True)
    (tmp_path / ".submitit" / "smoke").mkdir(parents=True)
    assert [p.name for p in results.preset_folders(tmp_path)] == ["smoke"]
    run = pipeline.expand(["kernel"], "smoke", {}, nb_dir=NB, runs_dir=tmp_path)[0]
    assert jobs.job_folder(run) == tmp_path / ".submitit" / "smoke"
