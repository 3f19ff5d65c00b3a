"""compare_loaders: both loaders run side by side and report rates (no timing assertions)."""
import gzip
import struct

import numpy as np
import pytest

from attnrepro.train.throughput import compare_loaders


def write_idx(path, arr):
    head = struct.pack(">I", 0x0800 | arr.ndim) + b"".join(struct.pack(">I", n) for n in arr.shape)
    with gzip.open(str(path) + ".gz", "wb") as f:
        f.write(head + arr.astype(np.uint8).tobytes())


@pytest.mark.slow
def test_compare_loaders_reports_both(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("t10k", 16)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n))
    res = compare_loaders(steps=2, rounds=1, warmup=1, batch_size=16, num_workers=0, width=0.25,
                          data_dir=str(tmp_path))
    got = {(r["loader"], r["mode"]) for r in res["rows"]}
    assert got == {(a, b) for a in ("tensor", "dataloader") for b in ("train_step", "fetch_in_loop", "data_only")}
    assert all(r["images_per_s"] > 0 and r["steps_measured"] == 2 for r in res["rows"])
    assert res["speedup"] > 0 and res["device"] == "cpu"
