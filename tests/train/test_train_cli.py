"""`attnrepro train`: bad input exits 2 with one line before anything is trained or written; a good run trains."""
import json
from pathlib import Path

import pytest

from attnrepro import cli
from attnrepro.train.cli import config_from_args


@pytest.fixture
def main(monkeypatch):
    # only the train command: the other commands' modules are not this test's business
    monkeypatch.setattr(cli, "COMMANDS", {"train": cli.COMMANDS["train"]})
    return cli.main


SYN = ["-p", "dataset", "synthetic", "-p", "device", "cpu"]


@pytest.mark.parametrize("args, words", [
    (["-p", "epoks", "2"], "did you mean epochs"),
    (["-p", "epochs", "two"], "epochs='two'"),
    (["-p", "schedule", "step"], "choose one of"),
    (["-p", "lr", "-1"], "lr=-1.0 is out of range"),
    (["-p", "dataset", "cifar10", "-p", "data_dir", "{tmp}/nowhere"], "data_dir='{tmp}/nowhere' does not exist"),
    (["-p", "dataset", "fashion_mnist", "-p", "data_dir", "{tmp}/nowhere"], "data_dir='{tmp}/nowhere' does not exist"),
    (["-p", "dataset", "imagefolder", "-p", "data_dir", "{tmp}"], "train/<class>"),
    (SYN + ["-p", "amp", "fp16"], "fp16"),
    (SYN + ["--config", "{tmp}/missing.yaml"], "no such file"),
    (SYN + ["--config", "{tmp}/list.yaml"], "mapping"),
    (SYN + ["--config", "{tmp}/badkey.yaml"], "unknown config key 'lrr'"),
])
def test_bad_input_exits_2_with_one_line(main, tmp_path, capsys, monkeypatch, args, words):
    from attnrepro import data
    monkeypatch.setattr(data.sources, "FASHION_MNIST_DIRS", [str(tmp_path / "no-debian")])
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "badkey.yaml").write_text("lrr: 0.1\n")
    out = tmp_path / "run"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["train", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("attnrepro train: error:")
    if words:
        assert words.replace("{tmp}", str(tmp_path)) in err
    assert not out.exists()
    assert not (tmp_path / "nowhere").exists()


def write_fashion(d: Path, n: int = 8) -> None:
    """Tiny Fashion-MNIST files in the real IDX format (magic 0x0803 images, 0x0801 labels)."""
    import gzip
    import struct
    d.mkdir(parents=True)
    for split in ("train", "t10k"):
        imgs = struct.pack(">IIII", 0x0803, n, 28, 28) + bytes(n * 28 * 28)
        labels = struct.pack(">II", 0x0801, n) + bytes(range(n))
        (d / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(imgs))
        (d / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))


@pytest.mark.parametrize("given", ["nonexistent", "empty"])
def test_a_given_data_dir_without_the_data_exits_2(main, tmp_path, capsys, monkeypatch, given):
    """`-p data_dir DIR` that does not hold the dataset never falls back to the Debian copy (which is there)."""
    from attnrepro import data
    debian = tmp_path / "debian"
    write_fashion(debian)
    monkeypatch.setattr(data.sources, "FASHION_MNIST_DIRS", [str(debian)])
    d = tmp_path / given
    if given == "empty":
        d.mkdir()
    out = tmp_path / "run"
    argv = ["train", "-p", "dataset", "fashion_mnist", "-p", "device", "cpu", "-p", "data_dir", str(d),
            "-p", "max_steps", "1", "-p", "width", "0.25", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"data_dir={str(d)!r}" in err and "train-images-idx3-ubyte" in err, err
    assert str(debian) not in err
    assert not out.exists()


def test_a_folder_of_another_config_exits_2(main, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"config_hash": "feedbeef", "lr": 0.5}))
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
    assert main(["train", *SYN, "--out", str(out)]) == 2
    assert "holds another run" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "metrics.jsonl"]


def test_out_that_is_a_file_exits_2(main, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["train", *SYN, "--out", str(f)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_yaml_then_overrides(tmp_path):
    import argparse
    from attnrepro.train.cli import configure
    (tmp_path / "c.yaml").write_text("epochs: 3\nlr: 0.2\nstages: [2, 3]\n")
    p = argparse.ArgumentParser()
    configure(p)
    args = p.parse_args(["--config", str(tmp_path / "c.yaml"), "-p", "lr", "0.05", "--out", "x"])
    cfg = config_from_args(args)
    assert (cfg.epochs, cfg.lr, cfg.stages) == (3, 0.05, [2, 3])


@pytest.mark.slow
def test_train_command_runs_resnet20(main, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", *SYN, "-p", "model", "resnet20", "-p", "width", "0.25", "-p", "train_subset", "64",
            "-p", "batch_size", "32", "-p", "val_split", "0.02", "-p", "max_steps", "1", "--out", str(out)]
    assert main(argv) == 0
    res = json.loads((out / "metrics.json").read_text())
    assert res["status"] == "finished" and res["config"]["model"] == "resnet20" and res["params"] > 0
    assert "finished 1 epochs" in capsys.readouterr().out
    # the same command again finds the finished run and trains nothing
    assert main(argv) == 0
    assert json.loads((out / "metrics.json").read_text()) == res


@pytest.fixture
def threads_restored(monkeypatch):
    """`train --threads` / a recorded count sets torch's intra-op threads for the process: put them back."""
    import torch
    n = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", str(n))     # restored (or removed) by monkeypatch
    yield n
    torch.set_num_threads(n)


def _rerun_main(monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", {k: cli.COMMANDS[k] for k in ("train", "rerun")})
    return cli.main


TINY_RUN = [*SYN, "-p", "model", "resnet20", "-p", "width", "0.25", "-p", "train_subset", "64", "-p", "batch_size",
            "16", "-p", "val_split", "0.25", "-p", "max_steps", "2", "-p", "epochs", "2", "-p", "checkpoint", "false"]


@pytest.mark.slow
def test_a_record_retrains_to_its_numbers_with_its_recorded_threads(tmp_path, capsys, monkeypatch, threads_restored):
    import torch
    main = _rerun_main(monkeypatch)
    rec = tmp_path / "runs" / "p" / "abl" / "v-s0"
    assert main(["train", *TINY_RUN, "--threads", "1", "--no-progress", "--out", str(rec)]) == 0
    first = json.loads((rec / "metrics.json").read_text())
    assert first["env"]["num_threads"] == 1
    torch.set_num_threads(2)                                   # this process would now train with 2
    # train --config on the record: the config_hash key is accepted and checked, the recorded count applied
    again = tmp_path / "again"
    assert main(["train", "--config", str(rec / "config.json"), "--no-progress", "--out", str(again)]) == 0
    assert "1 intra-op thread(s), as recorded" in capsys.readouterr().err
    second = json.loads((again / "metrics.json").read_text())
    assert second["env"]["num_threads"] == 1 and second["final"] == first["final"]
    assert second["config_hash"] == first["config_hash"]
    # rerun does the same and says whether the numbers are the same
    torch.set_num_threads(2)
    assert main(["rerun", str(rec), "--out", str(tmp_path / "third"), "--no-progress"]) == 0
    assert "reproduced exactly" in capsys.readouterr().out
    # a record whose numbers are not what its config trains: rerun says which differ (exit 1)
    first["final"]["val_top1"] += 1.0
    first["env"]["device_name"] = "Another CPU 9000"             # ... trained on another processor, it says so
    (rec / "metrics.json").write_text(json.dumps(first))
    assert main(["rerun", str(rec), "--out", str(tmp_path / "fourth"), "--no-progress"]) == 1
    cap = capsys.readouterr()
    assert "val_top1: recorded" in cap.out and "1 final metric(s) differ (processor Another CPU 9000 vs " in cap.out
    assert "this machine differs from the record's (processor Another CPU 9000 vs " in cap.err


def test_env_differences_name_threads_processor_versions_and_code():
    from attnrepro.train.cli import env_differences
    env = {"num_threads": 1, "device_name": "CPU A", "torch": "2.14.1", "torchvision": "0.29.1", "python": "3.11.7",
           "code": {"train": "aa", "models": "bb"}}
    assert env_differences(env, dict(env)) == []
    other = {**env, "num_threads": 2, "device_name": "CPU B", "torch": "2.9.1", "code": {"train": "aa", "models": "cc"}}
    assert env_differences(env, other) == ["threads 1 vs 2", "processor CPU A vs CPU B", "torch 2.14.1 vs 2.9.1",
                                           "training code differs in models"]
    old = {k: v for k, v in env.items() if k not in ("device_name", "code")}   # an older record: fewer keys
    assert env_differences(old, other) == ["threads 1 vs 2", "torch 2.14.1 vs 2.9.1",
                                           "the record carries no code hashes"]


def test_a_recorded_config_hash_is_checked_and_rerun_never_writes_into_the_record(tmp_path, capsys, monkeypatch):
    from attnrepro.config import RunConfig
    main = _rerun_main(monkeypatch)
    cfg = RunConfig.from_dict({"dataset": "synthetic", "device": "cpu"})
    rec = tmp_path / "rec"
    rec.mkdir()
    (rec / "config.json").write_text(json.dumps({**cfg.to_dict(), "config_hash": cfg.hash()}))
    edited = {**cfg.to_dict(), "lr": 0.3, "config_hash": cfg.hash()}
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    assert main(["train", "--config", str(tmp_path / "edited.json"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert f"config_hash {cfg.hash()} is not the hash of its keys" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    (rec / "metrics.json").write_text(json.dumps({"status": "finished", "config_hash": cfg.hash(), "final": {}}))
    assert main(["rerun", str(rec), "--out", str(rec)]) == 2
    assert "the record itself" in capsys.readouterr().err
    (rec / "metrics.json").write_text(json.dumps({"status": "failed", "config_hash": cfg.hash()}))
    assert main(["rerun", str(rec), "--out", str(tmp_path / "y")]) == 2
    assert "not a finished run folder" in capsys.readouterr().err
