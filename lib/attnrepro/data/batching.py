"""Batches on the training device: the in-memory datasets as one ``uint8`` tensor with a per-(seed, epoch) order and
augmentation (:class:`TensorLoader`), and a torch DataLoader wrapped to the same interface
(:class:`DataLoaderWrapper`). The rules are described in :mod:`attnrepro.data`."""
from __future__ import annotations

import contextlib
import functools
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

__all__ = ["TensorLoader", "DataLoaderWrapper", "SeededSampler", "SeededTransform", "random_crop_flip", "normalize"]


_PAD = 4


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


def _rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of rank ``rank``'s augmentation in epoch ``epoch`` (:class:`SeededSampler`): a function of
    (seed, epoch, rank) only, distinct per rank, so ranks draw different crops and a resume continues each rank's
    sequence."""
    return (_epoch_seed(seed, epoch) * 104_729 + rank * 15_485_863 + 0xA06) % (2 ** 63)


class SeededSampler(torch.utils.data.Sampler):
    """Wraps an index sampler so that it yields ``(index, sample_seed)``; a :class:`SeededTransform` dataset
    draws that sample's random transform from ``sample_seed``.

    Per epoch (:meth:`set_epoch`, forwarded to the wrapped sampler, e.g. a ``DistributedSampler``) the seeds come
    from one generator seeded by ``(seed, epoch, rank)`` (:func:`_rank_seed`). So the augmentation of every sample
    is fixed by (seed, epoch, rank, its position in the epoch): it differs between ranks, does not depend on the
    global RNG, on ``num_workers`` or on which worker loads the sample, and a resumed run draws what an
    uninterrupted one would have drawn.
    """

    def __init__(self, sampler, *, seed: int, rank: int = 0):
        self.sampler, self.seed, self.rank, self.epoch = sampler, seed, rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        indices = list(self.sampler)
        g = torch.Generator().manual_seed(_rank_seed(self.seed, self.epoch, self.rank))
        seeds = torch.randint(0, 2 ** 62, (len(indices),), generator=g).tolist()
        return iter(zip(indices, seeds))


class SeededTransform(torch.utils.data.Dataset):
    """``dataset`` (items ``(image, label)``) with ``transform`` applied under the torch RNG seeded by the sample's
    seed: ``ds[(index, sample_seed)]`` (see :class:`SeededSampler`). The caller's RNG state is left as it was."""

    def __init__(self, dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        index, sample_seed = item
        x, y = self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            return self.transform(x), y


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

    ``set_epoch`` reseeds the shuffling from ``(seed, epoch)`` (``generator``) and forwards the epoch to the
    sampler (a :class:`SeededSampler`, which seeds the augmentation per (seed, epoch, rank), and the
    ``DistributedSampler`` it may wrap).
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
