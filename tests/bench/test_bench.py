"""``attnrepro bench``: the quick run writes a well-formed table; bad devices exit with code 2.

No timing assertions: these tests check the harness (shape of the outputs, finite numbers, exit codes), not speed.
"""
from __future__ import annotations

import csv
import math

import pytest
import torch

from attnrepro import bench
from attnrepro.bench import cuda as bench_cuda
from attnrepro.bench import harness, train_step
from attnrepro.cli import main


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    threads = torch.get_num_threads()
    rc = main(["bench", "--quick", "--device", "cpu", "--threads", "1", "--out", str(out)])
    assert torch.get_num_threads() == threads  # restored
    return rc, out


def _csv_rows(out):
    with open(out / "bench.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _md_table(out):
    lines = [ln for ln in (out / "bench.md").read_text().splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    body = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]
    return header, body


@pytest.mark.slow
def test_quick_run_succeeds_and_writes_files(quick_run):
    rc, out = quick_run
    assert rc == 0, (out / "bench.md").read_text()
    for name in ("bench.csv", "bench.md", "bench_cpu.csv", "bench_cpu.md"):
        assert (out / name).is_file(), name
    assert (out / "bench.csv").read_text() == (out / "bench_cpu.csv").read_text()


@pytest.mark.slow
def test_markdown_table_shape(quick_run):
    _, out = quick_run
    header, body = _md_table(out)
    assert tuple(header) == bench.COLUMNS
    assert body, "empty table"
    assert all(len(r) == len(header) for r in body)
    assert {r[-1] for r in body} <= {"yes", "no", "n.a."}
    # quick sizes: targets are never judged
    assert {r[-1] for r in body} == {"n.a."}


@pytest.mark.slow
def test_every_group_has_rows_with_finite_positive_numbers(quick_run):
    _, out = quick_run
    rows = _csv_rows(out)
    groups = {r["group"] for r in rows}
    assert groups == set(bench.GROUPS)
    for r in rows:
        assert r["device"] == "cpu" and r["quick"] == "True" and r["clock"] == "cpu" and r["threads"] == "1"
        if r["group"] in bench_cuda._CUDA_ONLY:
            assert "cuda only" in r["config"] and r["met"] == "n.a."
            continue
        keys = ["fast_median_ms", "ref_median_ms", "ratio"]
        if "compare_loaders" not in r["benchmark"]:  # the engine's loader comparison measures no memory
            keys += ["fast_peak_mb", "ref_peak_mb"]
        for key in keys:
            v = float(r[key])
            assert math.isfinite(v) and v > 0, (r["benchmark"], r["config"], key, r[key])
        assert float(r["fast_iqr_ms"]) >= 0 and int(r["repeats"]) >= 1
        assert math.isclose(float(r["ratio"]), float(r["ref_median_ms"]) / float(r["fast_median_ms"]),
                            rel_tol=1e-6)


@pytest.mark.slow
def test_model_groups_cover_attention_kinds(quick_run):
    _, out = quick_run
    rows = _csv_rows(out)
    r20 = [r["benchmark"] for r in rows if r["group"] == "train_step_resnet20"]
    for kind in train_step.ATTENTION_KINDS_BENCHED:
        assert any(f" {kind} vs none" in b for b in r20), (kind, r20)


def test_cpu_peak_memory_sees_a_large_temporary():
    # a 4 MiB temporary that is freed before the call returns must show up in the peak
    def fn():
        t = torch.ones(1024, 1024)  # 4 MiB float32
        return float(t.sum())

    peak = bench.peak_memory_bytes(fn, torch.device("cpu"))
    assert 4 * 2**20 <= peak < 8 * 2**20


def test_measure_reports_median_and_iqr():
    m = bench.measure({"a": lambda: torch.ones(8).sum()}, torch.device("cpu"), harness.Settings.quick())["a"]
    assert m.median_ms > 0 and m.q1_ms <= m.median_ms <= m.q3_ms and m.repeats >= 1


def test_naive_aa_layer_computes_the_same_function_as_the_fast_one():
    # the baseline must be the same layer (shared parameters), only with naive attention
    from attnrepro.modules import AAConv2d

    torch.manual_seed(0)
    fast = AAConv2d(16, 16, 3, heads=2, kappa=0.5, upsilon=0.5, max_size=8)
    naive = bench.NaiveAAConv2d(fast)
    assert list(naive.parameters()) == list(fast.parameters())
    x = torch.randn(2, 16, 6, 5)
    torch.testing.assert_close(naive(x), fast(x), rtol=1e-4, atol=1e-5)


def test_clock_choice():
    assert bench.resolve_clock("wall", "cpu") == "wall"
    with pytest.raises(ValueError, match="sundial.*wall"):
        bench.resolve_clock("sundial", "cpu")
    with pytest.raises(ValueError, match="cuda"):
        bench.resolve_clock("cpu", "cuda")


def test_cuda_without_gpu_exits_2(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", "--device", "cuda", "--quick", "--only", "gates"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda" in err and "--device cpu" in err


def test_unknown_device_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--device", "tpu"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "tpu" in err and "cpu" in err and "cuda" in err


def test_unknown_group_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--only", "nope"])
    assert e.value.code == 2
    assert "nope" in capsys.readouterr().err


def test_run_bench_unknown_group_raises_valueerror():
    with pytest.raises(ValueError, match="nope.*expatt_fast_vs_dense"):
        bench.run_benchmarks("cpu", quick=True, only=["nope"])


def test_bad_threads_exits_2(capsys, tmp_path):
    assert main(["bench", "--threads", "0", "--out", str(tmp_path)]) == 2
    assert "--threads 0" in capsys.readouterr().err


@pytest.mark.cuda
@pytest.mark.slow
def test_quick_run_on_cuda(tmp_path):
    rc = main(["bench", "--quick", "--device", "cuda", "--out", str(tmp_path),
               "--only", "expatt_fast_vs_dense", "aa_vs_naive", "cuda_amp_channels_last", "cuda_compile"])
    assert rc == 0, (tmp_path / "bench.md").read_text()
    rows = _csv_rows(tmp_path)
    assert {r["group"] for r in rows} == {"expatt_fast_vs_dense", "aa_vs_naive", "cuda_amp_channels_last",
                                          "cuda_compile"}
    for r in rows:
        assert r["device"] == "cuda" and r["clock"] == "wall"
        for key in ("fast_median_ms", "ref_median_ms", "fast_peak_mb", "ref_peak_mb"):
            assert math.isfinite(float(r[key])) and float(r[key]) > 0, (r["benchmark"], key)
