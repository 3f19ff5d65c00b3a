"""Datasets and batching: small datasets live on the training device as one ``uint8`` tensor.

Where each dataset is looked for (the first place that has the files wins):

- ``fashion_mnist``: with ``data_dir`` set, only there: ``data_dir`` itself or its ``fashion-mnist/``,
  ``fashion_mnist/`` or ``FashionMNIST/raw/`` sub-folder, else torchvision's download into ``data_dir``. Without
  ``data_dir``: the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``); then
  torchvision's download cache ``<root>/FashionMNIST/raw``; then torchvision's download into that cache. Files:
  ``{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (``.gz`` or raw).
- ``cifar10`` / ``cifar100``: torchvision's python-pickle layout, ``<root>/cifar-10-batches-py`` or
  ``<root>/cifar-100-python`` (``root`` = ``data_dir``, which may also name that folder itself); downloaded by
  torchvision into ``root`` when missing and a network is reachable.
- ``imagefolder``: ``data_dir/train/<class>/*`` and ``data_dir/val/<class>/*`` (the same class names).
- ``synthetic``: seeded random CIFAR-shaped images (3 x 32 x 32, 10 classes) with a weak class signal; for tests
  and benchmarks, needs no files.

``root`` is ``data_dir`` when set, else ``$ATTNREPRO_DATA``, else ``~/.cache/attnrepro``. Setting
``ATTNREPRO_OFFLINE=1`` skips every download attempt. A dataset that cannot be found raises
:class:`DataNotFoundError`, whose message lists the places looked at and how to get the data.

A ``data_dir`` that was given is never replaced by another place: when it does not exist, is not a folder, or does
not hold the dataset (and no download into it succeeds), that is a :class:`DataNotFoundError` naming the path and
the files expected there. The search order above applies only when ``data_dir`` is not set.

Batching of the in-memory datasets (:class:`TensorLoader`): every epoch draws, from a generator seeded by
``(seed, epoch)`` alone, a permutation, per-sample crop offsets and flip bits; so the data order of any epoch is
known without any saved state, and a resumed run sees exactly the batches an uninterrupted run would. Random crop
(zero padding 4, as torchvision's ``RandomCrop(padding=4)``) and horizontal flip run as one gather on the device
(:func:`random_crop_flip`), then :func:`normalize` with the dataset's mean and std. The training subset
(``train_subset``) and the held-out validation split (``val_split``) are drawn with a fixed seed, independent of the
run's ``seed``: every run of a preset trains on the same images, so seeds vary only the initialisation and order.
"""
from __future__ import annotations

import contextlib
import functools
import gzip
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DataBundle", "DataError", "DataNotFoundError", "TensorLoader", "DataLoaderWrapper", "load", "locate",
           "read_idx", "random_crop_flip", "normalize", "MEAN_STD", "FASHION_MNIST_DIRS", "default_root"]

#: Where the Debian package ``dataset-fashion-mnist`` puts its files (public package path).
FASHION_MNIST_DIRS: list[str] = ["/usr/share/datasets/fashion-mnist"]

FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

#: Per-dataset channel mean and std (of pixel values in [0, 1]) used to normalise batches.
MEAN_STD: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "synthetic": ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
}

SYNTHETIC_TRAIN = 2048
SYNTHETIC_VAL = 512
SYNTHETIC_CLASSES = 10
_SPLIT_SEED = 0x5EED  # fixed: subsets and validation splits do not change with the run's seed
_PAD = 4


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


# ============================================================================ file formats
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


# ============================================================================ on-device batching
def random_crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int = _PAD) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip of a batch, as one gather (no per-image loop).

    The flip is folded into the gather: a mirrored crop reads its columns in reverse order. (``torch.gather`` on
    the flattened padded images; advanced indexing does the same but is far slower on CPU for ``uint8``.)

    Args:
        x: (B, C, H, W) images, any dtype (``uint8`` in the loaders).
        offsets: (B, 2) integer (row, column) offsets in ``[0, 2 * pad]`` into the padded image.
        flips: (B,) bool; True mirrors that image left-right (after the crop).
        pad: zero padding on every side.

    Returns:
        (B, C, H, W) crops, contiguous.
    """
    B, C, H, W = x.shape
    xp = F.pad(x, (pad, pad, pad, pad)) if pad else x
    Wp = W + 2 * pad
    dev = x.device
    rows = offsets[:, 0:1].to(dev) + torch.arange(H, device=dev)  # (B, H)
    cols = offsets[:, 1:2].to(dev) + torch.arange(W, device=dev)  # (B, W)
    cols = torch.where(flips.to(dev)[:, None], cols.flip(1), cols)
    flat = (rows[:, :, None] * Wp + cols[:, None, :]).reshape(B, 1, H * W).expand(B, C, H * W)
    return xp.reshape(B, C, -1).gather(2, flat).view(B, C, H, W)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``uint8`` (or [0, 255] float) images -> float32 ``(x / 255 - mean) / std`` per channel."""
    m, s = _norm_consts(tuple(mean), tuple(std), x.device)
    return (x.float() - m) / s


@functools.lru_cache(maxsize=16)
def _norm_consts(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(1, C, 1, 1)`` scale tensors of :func:`normalize`, made once per device (not a host-to-device copy,
    and on CUDA a synchronisation, every batch)."""
    m = torch.tensor(mean, device=device, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    s = torch.tensor(std, device=device, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    return m, s


@contextlib.contextmanager
def _single_thread(device: torch.device):
    """On CPU, run a batch's few small ops on one thread: each op of ~1e5 elements takes ~0.1 ms on one thread,
    while waking torch's intra-op pool costs up to a scheduler slice (~8 ms per op measured on a shared 2-core
    machine). The thread count is restored before the batch is yielded, so the model keeps every thread."""
    n = torch.get_num_threads()
    if device.type != "cpu" or n <= 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s data order and augmentation: a function of (seed, epoch) only, so a resumed run
    sees the same batches as an uninterrupted one."""
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2 ** 63)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(_epoch_seed(seed, epoch))


class TensorLoader:
    """Batches of a dataset held as one ``uint8`` tensor on the training device.

    Training mode (``train=True``): per epoch a seeded permutation (from ``(seed, epoch)``; call
    :meth:`set_epoch`), full batches only (a set smaller than one batch gives one batch), random crop + flip when
    ``augment``. Each of ``world_size`` ranks takes every ``world_size``-th slice of ``batch_size // world_size``
    samples of the shared permutation. Evaluation mode: the samples in order (rank ``r`` takes ``r::world_size``),
    every sample once.

    Yields ``(x, y)``: x float32 normalised (B, C, H, W) (channels-last memory when ``channels_last``), y int64.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int, mean, std,
                 train: bool, augment: bool = True, pad: int = _PAD, seed: int = 0, rank: int = 0,
                 world_size: int = 1, channels_last: bool = False, max_batches: int = 0):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be a (N, C, H, W) uint8 tensor, got {tuple(images.shape)} {images.dtype}")
        self.images, self.labels = images, labels
        self.batch_size = max(1, batch_size // world_size) if train else batch_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.train, self.augment, self.pad, self.seed = train, augment, pad, seed
        self.rank, self.world_size = rank, world_size
        self.channels_last = channels_last
        self.max_batches = max_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def __len__(self) -> int:
        n = self.num_samples
        if self.train:
            nb = max(1, n // (self.batch_size * self.world_size))
        else:
            mine = len(range(self.rank, n, self.world_size))
            nb = -(-mine // self.batch_size)
        return min(nb, self.max_batches) if self.max_batches else nb

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        x = normalize(x, self.mean, self.std)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, b, dev = self.num_samples, self.batch_size, self.images.device
        if not self.train:
            idx_all = torch.arange(self.rank, n, self.world_size, device=dev)
            for i in range(len(self)):
                idx = idx_all[i * b:(i + 1) * b]
                with _single_thread(dev):
                    batch = self._finish(self.images.index_select(0, idx)), self.labels.index_select(0, idx)
                yield batch
            return
        g = _epoch_generator(self.seed, self.epoch)
        perm = torch.randperm(n, generator=g)
        offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=g)
        flips = torch.rand(n, generator=g) < 0.5
        perm, offsets, flips = perm.to(dev), offsets.to(dev), flips.to(dev)
        bb = min(b, max(1, n // self.world_size))  # a set smaller than one batch: one (smaller) batch
        for i in range(len(self)):
            start = (i * self.world_size + self.rank) * bb
            sel = slice(start, start + bb)
            idx = perm[sel]
            with _single_thread(dev):
                x = self.images.index_select(0, idx)  # (advanced indexing is much slower for uint8 on CPU)
                if self.augment:
                    x = random_crop_flip(x, offsets[sel], flips[sel], self.pad)
                batch = self._finish(x), self.labels.index_select(0, idx)
            yield batch


class DataLoaderWrapper:
    """A torch DataLoader of ``uint8`` image batches, moved to the device (pinned, non-blocking) and normalised there.

    ``set_epoch`` reseeds the shuffling (and the workers' augmentation seeds) from ``(seed, epoch)``, or forwards
    to a DistributedSampler.
    """

    def __init__(self, loader, *, device: torch.device, mean, std, channels_last: bool = False, seed: int = 0,
                 generator: torch.Generator | None = None, max_batches: int = 0):
        self.loader, self.device = loader, device
        self.mean, self.std, self.channels_last = tuple(mean), tuple(std), channels_last
        self.seed, self.generator, self.max_batches = seed, generator, max_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        if self.generator is not None:
            self.generator.manual_seed(_epoch_seed(self.seed, epoch))

    @property
    def num_samples(self) -> int:
        return len(self.loader.dataset)

    def __len__(self) -> int:
        nb = len(self.loader)
        return min(nb, self.max_batches) if self.max_batches else nb

    def __iter__(self):
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        nb = len(self)
        for i, (x, y) in enumerate(self.loader):
            if i >= nb:
                break
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            yield normalize(x, self.mean, self.std).contiguous(memory_format=fmt), y


@dataclass
class DataBundle:
    """What :func:`load` returns: loaders and the facts a model needs."""

    train: Any
    val: Any
    num_classes: int
    in_chans: int
    input_size: int
    train_len: int
    val_len: int
    name: str
    source: str | None = None
    mean: tuple = ()
    std: tuple = ()
    extra: dict = field(default_factory=dict)


def _split_indices(n: int, cfg) -> tuple[np.ndarray, np.ndarray | None]:
    """(train indices, held-out val indices or None), drawn with the fixed split seed."""
    idx = np.arange(n)
    val_idx = None
    if cfg.val_split > 0:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(_SPLIT_SEED)).numpy()
        n_val = max(1, int(round(cfg.val_split * n)))
        val_idx, idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    if cfg.train_subset and cfg.train_subset < len(idx):
        perm = torch.randperm(len(idx), generator=torch.Generator().manual_seed(_SPLIT_SEED + 1)).numpy()
        idx = np.sort(idx[perm[:cfg.train_subset]])
    return idx, val_idx


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def load(cfg, device: str | torch.device = "cpu", *, rank: int | None = None,
         world_size: int | None = None) -> DataBundle:
    """Load the dataset of ``cfg`` for training on ``device``.

    Returns a :class:`DataBundle`; ``bundle.train`` and ``bundle.val`` are iterables of ``(x, y)`` batches with
    ``set_epoch(epoch)`` and ``len()``. Raises :class:`DataNotFoundError` / :class:`DataError` for missing or
    unreadable data.
    """
    device = torch.device(device)
    r, w = _dist()
    rank = r if rank is None else rank
    world_size = w if world_size is None else world_size
    where = locate(cfg)
    if cfg.dataset == "imagefolder":
        return _load_imagefolder(cfg, where, device, rank, world_size)
    if cfg.dataset == "fashion_mnist":
        arrays, num_classes = _load_fashion(where), 10
    elif cfg.dataset in ("cifar10", "cifar100"):
        arrays, num_classes = _load_cifar(cfg.dataset, where), (10 if cfg.dataset == "cifar10" else 100)
    else:
        arrays, num_classes = _synthetic(), SYNTHETIC_CLASSES
    tx, ty = arrays["train_x"], arrays["train_y"]
    train_idx, val_idx = _split_indices(len(tx), cfg)
    if val_idx is not None:
        vx, vy = tx[val_idx], ty[val_idx]
    else:
        vx, vy = arrays["test_x"], arrays["test_y"]
    tx, ty = tx[train_idx], ty[train_idx]
    bad = int(max(ty.max(initial=0), vy.max(initial=0)))
    if bad >= num_classes:
        raise DataError(f"{cfg.dataset}: label {bad} out of range for {num_classes} classes")

    def to_dev(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.array(a, copy=True) if not a.flags.writeable else np.ascontiguousarray(a))
        if device.type == "cuda":
            t = t.pin_memory()
        return t.to(device, non_blocking=True)

    mean, std = MEAN_STD[cfg.dataset]
    common = dict(mean=mean, std=std, channels_last=cfg.channels_last, seed=cfg.seed, rank=rank,
                  world_size=world_size, max_batches=cfg.max_steps)
    train = TensorLoader(to_dev(tx), to_dev(ty), batch_size=cfg.batch_size, train=True, augment=cfg.augment,
                         **common)
    val = TensorLoader(to_dev(vx), to_dev(vy), batch_size=cfg.eval_batch_size, train=False, **common)
    return DataBundle(train=train, val=val, num_classes=num_classes, in_chans=tx.shape[1], input_size=tx.shape[-1],
                      train_len=len(ty), val_len=len(vy), name=cfg.dataset,
                      source=None if where is None else str(where), mean=mean, std=std)


def _load_imagefolder(cfg, root: Path, device: torch.device, rank: int, world_size: int) -> DataBundle:
    import torchvision
    from torchvision.transforms import v2

    size = cfg.image_size
    resize = int(round(size * 8 / 7))
    if cfg.augment:
        train_tf = v2.Compose([v2.PILToTensor(), v2.RandomResizedCrop(size, antialias=True),
                               v2.RandomHorizontalFlip()])
    else:
        train_tf = v2.Compose([v2.PILToTensor(), v2.Resize(resize, antialias=True), v2.CenterCrop(size)])
    val_tf = v2.Compose([v2.PILToTensor(), v2.Resize(resize, antialias=True), v2.CenterCrop(size)])
    try:
        train_ds = torchvision.datasets.ImageFolder(str(root / "train"), transform=train_tf)
        if cfg.val_split > 0:
            val_ds = torchvision.datasets.ImageFolder(str(root / "train"), transform=val_tf)
        else:
            val_ds = torchvision.datasets.ImageFolder(str(root / "val"), transform=val_tf)
    except (FileNotFoundError, OSError) as e:
        raise DataError(f"imagefolder {root}: {e}") from e
    if val_ds.classes != train_ds.classes:
        raise DataError(f"imagefolder {root}: train/ and val/ have different class folders "
                        f"({len(train_ds.classes)} vs {len(val_ds.classes)})")
    train_idx, val_idx = _split_indices(len(train_ds), cfg)
    train_set = torch.utils.data.Subset(train_ds, train_idx.tolist())
    val_set = torch.utils.data.Subset(val_ds, val_idx.tolist()) if val_idx is not None else val_ds
    pin = device.type == "cuda"
    workers = cfg.num_workers
    kw = dict(num_workers=workers, pin_memory=pin, persistent_workers=workers > 0)
    gen = None
    if world_size > 1:
        from torch.utils.data.distributed import DistributedSampler
        sampler = DistributedSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=cfg.seed,
                                     drop_last=True)
        val_sampler = DistributedSampler(val_set, num_replicas=world_size, rank=rank, shuffle=False)
        train_loader = torch.utils.data.DataLoader(train_set, batch_size=max(1, cfg.batch_size // world_size),
                                                   sampler=sampler, drop_last=True, **kw)
        val_loader = torch.utils.data.DataLoader(val_set, batch_size=cfg.eval_batch_size, sampler=val_sampler, **kw)
    else:
        gen = torch.Generator()
        train_loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True,
                                                   generator=gen, drop_last=len(train_set) >= cfg.batch_size, **kw)
        val_loader = torch.utils.data.DataLoader(val_set, batch_size=cfg.eval_batch_size, shuffle=False, **kw)
    mean, std = MEAN_STD["imagefolder"]
    common = dict(device=device, mean=mean, std=std, channels_last=cfg.channels_last, seed=cfg.seed,
                  max_batches=cfg.max_steps)
    train = DataLoaderWrapper(train_loader, generator=gen, **common)
    val = DataLoaderWrapper(val_loader, **common)
    return DataBundle(train=train, val=val, num_classes=len(train_ds.classes), in_chans=3, input_size=size,
                      train_len=len(train_set), val_len=len(val_set), name="imagefolder", source=str(root),
                      mean=mean, std=std, extra={"classes": train_ds.classes})
