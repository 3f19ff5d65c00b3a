"""Where each dataset lies and how its files are read: the search order, the checks on a given ``data_dir``, the
downloads, and the readers of the on-disk formats (IDX for Fashion-MNIST, torchvision's pickles for CIFAR). The
places and the rules are described in :mod:`attnrepro.data`."""
from __future__ import annotations

import functools
import gzip
import os
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

__all__ = ["FASHION_MNIST_DIRS", "DataError", "DataNotFoundError", "default_root", "locate", "read_idx"]


#: Where the Debian package ``dataset-fashion-mnist`` puts its files (public package path).
FASHION_MNIST_DIRS: list[str] = ["/usr/share/datasets/fashion-mnist"]


FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


SYNTHETIC_TRAIN = 2048


SYNTHETIC_VAL = 512


SYNTHETIC_CLASSES = 10


class DataError(Exception):
    """A dataset is missing or unreadable; the message says where it looked and how to get the data."""


class DataNotFoundError(DataError, FileNotFoundError):
    """The dataset's files are not in any of the places looked at."""


def default_root() -> Path:
    """Where datasets are downloaded when ``data_dir`` is not set: ``$ATTNREPRO_DATA`` or ``~/.cache/attnrepro``."""
    env = os.environ.get("ATTNREPRO_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "attnrepro"


def _offline() -> bool:
    return os.environ.get("ATTNREPRO_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (MNIST format, ``.gz`` or raw) of unsigned bytes into a numpy array.

    Magic numbers: ``0x00000803`` (2051) for 3-d image files, ``0x00000801`` (2049) for label vectors.
    """
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            buf = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from e
    if len(buf) < 8 or buf[0] != 0 or buf[1] != 0 or buf[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (bad magic number {buf[:4].hex()})")
    ndim = buf[3]
    if ndim not in (1, 3):
        raise DataError(f"{path}: IDX with {ndim} dimensions; expected 1 (labels) or 3 (images)")
    shape = tuple(int.from_bytes(buf[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    start = 4 + 4 * ndim
    n = int(np.prod(shape))
    if len(buf) - start != n:
        raise DataError(f"{path}: header says shape {shape} ({n} bytes) but the file holds {len(buf) - start}")
    return np.frombuffer(buf, dtype=np.uint8, offset=start).reshape(shape).copy()


def _find(dirpath: Path, name: str) -> Path | None:
    for cand in (dirpath / f"{name}.gz", dirpath / name):
        if cand.is_file():
            return cand
    return None


def _fashion_candidates(data_dir: str | None) -> list[Path]:
    """Where fashion_mnist may lie: only under ``data_dir`` when it is set, else the default places."""
    if data_dir:
        d = Path(data_dir).expanduser()
        return [d, d / "fashion-mnist", d / "fashion_mnist", d / "FashionMNIST" / "raw"]
    out = [Path(p) for p in FASHION_MNIST_DIRS]
    out.append(default_root() / "FashionMNIST" / "raw")
    return list(dict.fromkeys(out))


def _fashion_dir(data_dir: str | None) -> Path | None:
    names = [n for pair in FASHION_FILES.values() for n in pair]
    for d in _fashion_candidates(data_dir):
        if all(_find(d, n) for n in names):
            return d
    return None


def _cifar_spec(name: str) -> tuple[str, list[str], list[str], bytes]:
    if name == "cifar10":
        return "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels"
    return "cifar-100-python", ["train"], ["test"], b"fine_labels"


def _cifar_dir(name: str, data_dir: str | None) -> tuple[Path | None, list[Path]]:
    folder, train, test, _ = _cifar_spec(name)
    root = Path(data_dir).expanduser() if data_dir else default_root()
    cands = [root / folder, root]
    for d in cands:
        if all((d / f).is_file() for f in train + test):
            return d, cands
    return None, cands


def _not_found(dataset: str, looked: Sequence[Path], how: str) -> DataNotFoundError:
    places = ", ".join(str(p) for p in looked)
    return DataNotFoundError(f"dataset {dataset!r} not found; looked in: {places}. {how}")


#: what each dataset needs in its folder, for the messages about a ``data_dir`` that does not hold it
_EXPECTED = {
    "fashion_mnist": "the files train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
                     "t10k-labels-idx1-ubyte (.gz or raw), in it or in its fashion-mnist/, fashion_mnist/ or "
                     "FashionMNIST/raw/ sub-folder",
    "cifar10": "torchvision's python CIFAR-10 (cifar-10-batches-py/ with data_batch_1..5 and test_batch, or those "
               "files in it)",
    "cifar100": "torchvision's python CIFAR-100 (cifar-100-python/ with train and test, or those files in it)",
    "imagefolder": "train/<class>/<images> and val/<class>/<images> (the same class folders in both)",
}


def _check_data_dir(dataset: str, data_dir: str) -> Path:
    """The explicit ``data_dir`` as a Path; :class:`DataNotFoundError` naming it when it is no folder."""
    d = Path(data_dir).expanduser()
    if not d.is_dir():
        what = "is not a folder" if d.exists() else "does not exist"
        raise DataNotFoundError(f"data_dir={data_dir!r} {what}; dataset {dataset!r} expects there "
                                f"{_EXPECTED[dataset]}. Give the folder that holds it, or leave data_dir unset to use "
                                "the default places (see `attnrepro.data`).")
    return d


def _not_in_data_dir(dataset: str, data_dir: str, looked: Sequence[Path], download: bool) -> DataNotFoundError:
    places = ", ".join(str(p) for p in looked)
    tried = "a download into it failed" if download else "downloads are off (ATTNREPRO_OFFLINE)"
    return DataNotFoundError(f"dataset {dataset!r} is not in data_dir={data_dir!r} (looked in: {places}; {tried}); "
                             f"expected there {_EXPECTED[dataset]}. Give the folder that holds it, or leave data_dir "
                             "unset to use the default places (see `attnrepro.data`).")


def _try_download(root: Path, fetch) -> None:
    """Run ``fetch(root)`` (a torchvision download); on failure remove the empty folders it created."""
    created = []
    p = root
    while not p.exists():
        created.append(p)
        p = p.parent
    try:
        fetch(str(root))
    except Exception:  # no network, no permission: the caller reports where it looked
        pass
    for d in created:  # deepest first
        for sub in sorted(d.rglob("*"), key=lambda q: -len(q.parts)) if d.is_dir() else []:
            if sub.is_dir() and not any(sub.iterdir()):
                sub.rmdir()
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()


def locate(cfg, *, download: bool | None = None) -> Path | None:
    """Find (and where allowed, download) the dataset of ``cfg``; return its folder (None for ``synthetic``).

    Raises :class:`DataNotFoundError` when it is nowhere. Cheap: checks file presence only, reads nothing; so the
    CLI calls it to reject a bad ``data_dir`` before building anything.
    """
    download = (not _offline()) if download is None else download
    ds = cfg.dataset
    if ds == "synthetic":
        return None
    if ds not in _EXPECTED:
        raise ValueError(f"dataset={ds!r} is not valid; choose one of: fashion_mnist, cifar10, cifar100, "
                         "imagefolder, synthetic")
    if cfg.data_dir:
        _check_data_dir(ds, cfg.data_dir)   # a path the user gave is never silently replaced by another place
    if ds == "fashion_mnist":
        d = _fashion_dir(cfg.data_dir)
        if d is None and download:
            root = Path(cfg.data_dir).expanduser() if cfg.data_dir else default_root()
            import torchvision
            _try_download(root, lambda r: (torchvision.datasets.FashionMNIST(r, train=True, download=True),
                                           torchvision.datasets.FashionMNIST(r, train=False, download=True)))
            d = _fashion_dir(cfg.data_dir)
        if d is None and cfg.data_dir:
            raise _not_in_data_dir(ds, cfg.data_dir, _fashion_candidates(cfg.data_dir), download)
        if d is None:
            raise _not_found(ds, _fashion_candidates(cfg.data_dir),
                             "Get it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put "
                             "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
                             "t10k-labels-idx1-ubyte.gz in a folder and pass it as `-p data_dir FOLDER`"
                             + ("" if download else " (downloads are off: ATTNREPRO_OFFLINE)") + ".")
        return d
    if ds in ("cifar10", "cifar100"):
        d, cands = _cifar_dir(ds, cfg.data_dir)
        if d is None and download:
            root = Path(cfg.data_dir).expanduser() if cfg.data_dir else default_root()
            import torchvision
            cls = torchvision.datasets.CIFAR10 if ds == "cifar10" else torchvision.datasets.CIFAR100
            _try_download(root, lambda r: cls(r, train=True, download=True))
            d, cands = _cifar_dir(ds, cfg.data_dir)
        if d is None and cfg.data_dir:
            raise _not_in_data_dir(ds, cfg.data_dir, cands, download)
        if d is None:
            folder = _cifar_spec(ds)[0]
            raise _not_found(ds, cands, f"Put torchvision's python version of the dataset ({folder}/, from "
                             "https://www.cs.toronto.edu/~kriz/cifar.html) under a folder and pass that folder as "
                             "`-p data_dir FOLDER`; with a network it is downloaded there"
                             + ("" if download else " (downloads are off: ATTNREPRO_OFFLINE)") + ".")
        return d
    if ds == "imagefolder":
        root = Path(cfg.data_dir).expanduser()
        missing = [s for s in ("train", "val") if not (root / s).is_dir()
                   or not any(p.is_dir() for p in (root / s).iterdir())]
        if missing:
            places = ", ".join(str(root / s) for s in missing)
            raise DataNotFoundError(f"dataset 'imagefolder' is not in data_dir={cfg.data_dir!r}: no class folders in "
                                    f"{places}; expected there {_EXPECTED[ds]} (Tiny ImageNet's val/ must first be "
                                    "sorted into class folders by val_annotations.txt).")
        return root
    raise ValueError(f"dataset={ds!r} is not valid; choose one of: fashion_mnist, cifar10, cifar100, imagefolder, "
                     "synthetic")


def _load_fashion(d: Path) -> dict[str, np.ndarray]:
    out = {}
    for split, (img_name, lab_name) in FASHION_FILES.items():
        images = read_idx(_find(d, img_name))
        labels = read_idx(_find(d, lab_name))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{d}: {split} images {images.shape} and labels {labels.shape} do not match")
        out[f"{split}_x"] = images[:, None]  # (N, 1, 28, 28)
        out[f"{split}_y"] = labels.astype(np.int64)
    return out


def _load_cifar(name: str, d: Path) -> dict[str, np.ndarray]:
    _, train, test, key = _cifar_spec(name)
    out = {}
    for split, files in (("train", train), ("test", test)):
        xs, ys = [], []
        for f in files:
            try:
                with open(d / f, "rb") as fh:
                    entry = pickle.load(fh, encoding="bytes")
                data = entry.get(b"data", entry.get("data"))
                labels = entry.get(key, entry.get(key.decode()))
                xs.append(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(labels, dtype=np.int64))
            except Exception as e:
                raise DataError(f"cannot read CIFAR batch {d / f}: {type(e).__name__}: {e}") from e
        out[f"{split}_x"] = np.concatenate(xs)
        out[f"{split}_y"] = np.concatenate(ys)
        if len(out[f"{split}_x"]) != len(out[f"{split}_y"]):
            raise DataError(f"{d}: {split} images and labels differ in number")
    return out


@functools.lru_cache(maxsize=2)
def _synthetic(seed: int = 0) -> dict[str, np.ndarray]:
    g = torch.Generator().manual_seed(1234 + seed)
    templates = torch.randint(0, 256, (SYNTHETIC_CLASSES, 3, 32, 32), generator=g, dtype=torch.uint8)
    out = {}
    for split, n in (("train", SYNTHETIC_TRAIN), ("test", SYNTHETIC_VAL)):
        y = torch.randint(0, SYNTHETIC_CLASSES, (n,), generator=g)
        noise = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        x = (templates[y].to(torch.int16) + noise.to(torch.int16)) // 2
        out[f"{split}_x"] = x.to(torch.uint8).numpy()
        out[f"{split}_y"] = y.numpy()
        out[f"{split}_x"].flags.writeable = False  # cached: shared by every load
        out[f"{split}_y"].flags.writeable = False
    return out
