"""Small dataset files in their real on-disk formats, for the tests of the loaders and of the pipeline (this folder is
on the tests' import path, so every test folder can import it)."""
import gzip
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> None:
    magic = 0x0800 | arr.ndim  # 0x0803 images, 0x0801 labels (unsigned byte)
    head = struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in arr.shape)
    raw = head + arr.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def make_fashion(d: Path, n_train=40, n_test=20, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {"train_x": rng.integers(0, 256, (n_train, 28, 28)), "train_y": rng.integers(0, 10, n_train),
              "test_x": rng.integers(0, 256, (n_test, 28, 28)), "test_y": rng.integers(0, 10, n_test)}
    d.mkdir(parents=True, exist_ok=True)
    write_idx(d / "train-images-idx3-ubyte", arrays["train_x"], gz)
    write_idx(d / "train-labels-idx1-ubyte", arrays["train_y"], gz)
    write_idx(d / "t10k-images-idx3-ubyte", arrays["test_x"], gz)
    write_idx(d / "t10k-labels-idx1-ubyte", arrays["test_y"], gz)
    return arrays


def write_identical_imagefolder(root: Path, classes=("a", "b"), n=8, size=(24, 28)) -> None:
    """An ImageFolder (train/ and val/) whose images are all one image: batches can then differ only by their
    augmentation."""
    from PIL import Image
    arr = np.random.default_rng(1).integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(arr).save(root / split / c / f"{i}.png")
