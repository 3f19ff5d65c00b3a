"""attnrepro._io: atomic writes give files the mode the umask says; the run lock excludes and leaves no file."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import stat
import time
from pathlib import Path

import pytest

from attnrepro._io import atomic_write, atomic_write_text


@pytest.fixture(params=[0o022, 0o027, 0o002, 0o077])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_atomic_writes_follow_the_umask(tmp_path, umask):
    want = 0o666 & ~umask
    atomic_write_text(tmp_path / "a.json", "{}")
    atomic_write(tmp_path / "b.bin", lambda f: f.write(b"x"))
    atomic_write_text(tmp_path / "a.json", "{} ")           # replacing a file gives the new one the same mode
    with open(tmp_path / "plain.txt", "w") as f:           # what any other file gets
        f.write("x")
    assert mode(tmp_path / "plain.txt") == want
    assert mode(tmp_path / "a.json") == want and mode(tmp_path / "b.bin") == want
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.bin", "plain.txt"]   # no temporary left


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "old")

    def boom(f):
        f.write(b"half")
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "a.txt", boom)
    assert (tmp_path / "a.txt").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_run_files_report_and_checkpoint_follow_the_umask(tmp_path, monkeypatch):
    """The files the issue names: metrics.json, config.json, checkpoint.pt (engine), variant.json (pipeline),
    report.html (report); under a group-readable umask (tempfile's private 0o600 was the bug)."""
    old = os.umask(0o027)
    try:
        _run_files(tmp_path, monkeypatch, 0o027)
    finally:
        os.umask(old)


def _run_files(tmp_path, monkeypatch, umask):
    import nbformat
    import torch.nn as nn
    from nbformat.v4 import new_markdown_cell, new_notebook

    from attnrepro import pipeline
    from attnrepro.analysis import report
    from attnrepro.pipeline import execution
    from attnrepro.config import RunConfig
    from attnrepro.train import run_training

    def linear(cfg, num_classes, in_chans, side):   # the engine's files, not a real model, are this test's business
        return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * side * side, num_classes))

    want = 0o666 & ~umask
    out = tmp_path / "run"
    cfg = RunConfig.from_dict({"dataset": "synthetic", "max_steps": 1, "batch_size": 16, "eval_batch_size": 64,
                               "device": "cpu"})
    run_training(cfg, out, progress=False, verbose=False, model_fn=linear)
    for name in ("metrics.json", "config.json", "checkpoint.pt", "metrics.jsonl"):
        assert mode(out / name) == want, name
    nb = tmp_path / "r.ipynb"
    nbformat.write(new_notebook(cells=[new_markdown_cell("# hi")]), str(nb))
    assert mode(report.export_html(nb, tmp_path / "report.html")) == want

    def notebook(run, kernel_name, start_timeout):   # the notebook's part: the engine above writes its files
        (run.out_dir / "metrics.json").write_text(json.dumps({"status": "finished", "config_hash": cfg.hash()}))
    monkeypatch.setattr(execution, "_papermill", notebook)
    r = pipeline.Run(preset="p", ablation="a", variant="v", seed=0, config=cfg, params={}, reference="v",
                     notebook=nb, out_dir=tmp_path / "runs" / "p" / "a" / "v-s0", options={})
    assert pipeline.execute(r)["status"] == "finished"
    assert mode(r.out_dir / "variant.json") == want and mode(r.out_dir / "config.json") == want


# ---------------------------------------------------------------------------- the lock
def _contend(path: str, counter: str, inside: str, n: int) -> None:
    from attnrepro._io import held_lock
    for _ in range(n):
        with held_lock(path):
            if os.path.exists(inside):
                raise AssertionError("two holders at once")
            open(inside, "w").close()
            v = int(Path(counter).read_text()) if os.path.exists(counter) else 0
            time.sleep(0.001)
            Path(counter).write_text(str(v + 1))
            os.unlink(inside)


def test_the_lock_excludes_although_its_file_is_removed_at_every_release(tmp_path):
    """Each holder unlinks the lock file before it lets go, while others wait on the old file or create a new one:
    still one holder at a time, every increment counted, and no file left."""
    ctx = mp.get_context("spawn")
    args = (str(tmp_path / ".x.lock"), str(tmp_path / "count"), str(tmp_path / "inside"), 40)
    procs = [ctx.Process(target=_contend, args=args) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert (tmp_path / "count").read_text() == "160"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["count"]


def test_a_waiter_is_told_and_gets_the_lock_after_the_holder(tmp_path):
    import threading

    from attnrepro._io import held_lock
    order = []
    waited = threading.Event()
    with held_lock(tmp_path / ".y.lock"):
        t = threading.Thread(target=lambda: held_lock_and_record(tmp_path / ".y.lock", order, waited))
        t.start()
        assert waited.wait(10)
        order.append("holder done")
    t.join(10)
    assert order == ["holder done", "waiter in"] and not (tmp_path / ".y.lock").exists()


def held_lock_and_record(path, order, waited):
    from attnrepro._io import held_lock
    with held_lock(path, on_wait=waited.set):
        order.append("waiter in")


def test_a_lock_on_a_file_the_path_no_longer_names_is_taken_again(tmp_path, monkeypatch):
    """NFS renames a file removed while another client has it open (``.nfsXXXX``): it keeps its link, so filelock's
    unlinked-inode check passes for a waiter that opened the old file just before the holder removed it and locked
    it just after. That waiter must lock the file the path names, or a newcomer would lock that one and be in at the
    same time. The race is made certain here: the first lock taken is renamed away the moment it is held."""
    import threading

    import filelock

    from attnrepro import _io
    real = filelock.FileLock
    raced = []

    def racy(path, *a, **k):
        lock = real(path, *a, **k)
        if not raced:
            raced.append(path)
            acquire = lock.acquire

            def acquire_then_lose_the_name(*a, **k):
                out = acquire(*a, **k)
                os.rename(path, path + ".nfs0001")
                return out
            lock.acquire = acquire_then_lose_the_name
        return lock
    monkeypatch.setattr(filelock, "FileLock", racy)
    path = str(tmp_path / ".z.lock")
    newcomer = []
    with _io.held_lock(path):
        t = threading.Thread(target=lambda: newcomer.append(_try_lock(real, filelock.Timeout, path)))
        t.start()
        t.join(10)
    assert raced == [path] and newcomer == ["refused"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".z.lock.nfs0001"]


def _try_lock(lock_class, timeout_error, path):
    lock = lock_class(path)
    try:
        lock.acquire(timeout=0)
    except timeout_error:
        return "refused"
    lock.release()
    return "got it too"
