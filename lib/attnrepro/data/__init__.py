"""Datasets and batching: small datasets live on the training device as one ``uint8`` tensor.

The package: :mod:`.sources` (where each dataset lies and how its files are read), :mod:`.batching` (the loaders
and the on-device augmentation) and, here, :func:`load` (a run config -> its train and validation loaders).

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

The ImageFolder loader (a torch DataLoader): the order of each epoch comes from ``(seed, epoch)`` (one process) or
from a ``DistributedSampler`` seeded by ``seed`` (DDP: the ranks split one permutation); each sample's random crop
and flip come from its own seed, drawn by a generator seeded by ``(seed, epoch, rank)``
(:class:`~.batching.SeededSampler`). So the ranks draw different augmentations, the numbers do not depend on
``num_workers``, and a resumed run sees the batches an uninterrupted one would have seen. (``seed`` is the run's
``RunConfig.run_seed``.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .batching import DataLoaderWrapper, SeededSampler, SeededTransform, TensorLoader, normalize, random_crop_flip
from .sources import (FASHION_MNIST_DIRS, SYNTHETIC_CLASSES, SYNTHETIC_TRAIN, SYNTHETIC_VAL, DataError,
                      DataNotFoundError, _load_cifar, _load_fashion, _synthetic, default_root, locate, read_idx)

__all__ = ["DataBundle", "DataError", "DataNotFoundError", "TensorLoader", "DataLoaderWrapper", "load", "locate",
           "read_idx", "random_crop_flip", "normalize", "MEAN_STD", "FASHION_MNIST_DIRS", "default_root",
           "SYNTHETIC_TRAIN", "SYNTHETIC_VAL", "SYNTHETIC_CLASSES"]


#: Per-dataset channel mean and std (of pixel values in [0, 1]) used to normalise batches.
MEAN_STD: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "synthetic": ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
}


_SPLIT_SEED = 0x5EED  # fixed: subsets and validation splits do not change with the run's seed


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
    common = dict(mean=mean, std=std, channels_last=cfg.channels_last, seed=cfg.run_seed, rank=rank,
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
        train_ds = torchvision.datasets.ImageFolder(str(root / "train"))   # transformed by SeededTransform
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
    # the augmentation: each sample's random transform drawn from a seed of a (seed, epoch, rank) generator
    # (SeededSampler), not from the global RNG, which every rank seeds alike and the workers fork
    seeded = SeededTransform(train_set, train_tf)
    gen = None
    if world_size > 1:
        from torch.utils.data.distributed import DistributedSampler
        order = DistributedSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True,
                                   seed=cfg.run_seed, drop_last=True)
        val_sampler = DistributedSampler(val_set, num_replicas=world_size, rank=rank, shuffle=False)
        train_loader = torch.utils.data.DataLoader(seeded, batch_size=max(1, cfg.batch_size // world_size),
                                                   sampler=SeededSampler(order, seed=cfg.run_seed, rank=rank),
                                                   drop_last=True, **kw)
        val_loader = torch.utils.data.DataLoader(val_set, batch_size=cfg.eval_batch_size, sampler=val_sampler, **kw)
    else:
        gen = torch.Generator()
        order = torch.utils.data.RandomSampler(train_set, generator=gen)
        train_loader = torch.utils.data.DataLoader(seeded, batch_size=cfg.batch_size,
                                                   sampler=SeededSampler(order, seed=cfg.run_seed),
                                                   drop_last=len(train_set) >= cfg.batch_size, **kw)
        val_loader = torch.utils.data.DataLoader(val_set, batch_size=cfg.eval_batch_size, shuffle=False, **kw)
    mean, std = MEAN_STD["imagefolder"]
    common = dict(device=device, mean=mean, std=std, channels_last=cfg.channels_last, seed=cfg.run_seed,
                  max_batches=cfg.max_steps)
    train = DataLoaderWrapper(train_loader, generator=gen, **common)
    val = DataLoaderWrapper(val_loader, **common)
    return DataBundle(train=train, val=val, num_classes=len(train_ds.classes), in_chans=3, input_size=size,
                      train_len=len(train_set), val_len=len(val_set), name="imagefolder", source=str(root),
                      mean=mean, std=std, extra={"classes": train_ds.classes})
