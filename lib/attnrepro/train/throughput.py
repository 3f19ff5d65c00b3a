"""Loader throughput: the on-device tensor loader against a torchvision DataLoader with PIL transforms.

:func:`compare_loaders` trains resnet20 on Fashion-MNIST with the same model, optimiser and batch size, fed in
turn by

- ``tensor``: :class:`attnrepro.data.TensorLoader` (one ``uint8`` tensor on the device; crop + flip as one gather);
- ``dataloader``: ``torch.utils.data.DataLoader`` over the same images as PIL images with torchvision's
  ``RandomCrop(28, padding=4)``, ``RandomHorizontalFlip()``, ``ToTensor()``, ``Normalize(mean, std)`` in
  ``num_workers`` worker processes (what torchvision's FashionMNIST dataset does per image).

The two alternate in rounds within one run (so a shared machine's load drifts over both alike); the first
``warmup`` steps of every round are discarded (they include the DataLoader's prefetch buffer, filled while the
other loader ran). Reported: the median over measured steps of images per second of a whole training step
(batch fetch + forward + backward + SGD step), of the batch fetch within those training steps
(``fetch_in_loop``: the loader's real cost to training, for the DataLoader the wait for a prefetched batch), and of
fetching batches alone, back to back (``data_only``); also the best (fastest-step) rate, which on a shared machine
is closer to what the code can do than the median.

On a CPU, ``data_only`` of the tensor loader mostly measures waking torch's intra-op thread pool for each small
op (it sleeps between back-to-back fetches; on this suite's shared 2-core machine about 8 ms per op with 2 threads,
0.2 ms per batch with 1); inside a training loop the pool is awake and a fetch costs well under 1 ms:
``fetch_in_loop`` is the number to read.

Run: ``python -m attnrepro.train.throughput --steps 10 --rounds 3``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np
import torch
import torch.nn as nn

__all__ = ["compare_loaders"]


class _PILDataset(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image
        img = Image.fromarray(self.images[i], mode="L") if self.images.ndim == 3 else Image.fromarray(self.images[i])
        return self.transform(img), int(self.labels[i])


def _forever(loader, start_epoch: int = 0):
    epoch = start_epoch
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def compare_loaders(steps: int = 20, rounds: int = 3, warmup: int = 5, batch_size: int = 128,
                    num_workers: int = 2, device: str = "cpu", width: float = 1.0, data_dir: str | None = None,
                    channels_last: bool = False, seed: int = 0, data_only: bool = True) -> dict[str, Any]:
    """Images/s of resnet20 training steps on Fashion-MNIST, tensor-resident loader vs DataLoader + PIL transforms.

    Args:
        steps: measured steps per loader per round.
        rounds: rounds; each runs both loaders in turn.
        warmup: steps discarded at the start of every round (>= the DataLoader's prefetch, 2 x num_workers).
        batch_size: training batch size.
        num_workers: DataLoader worker processes.
        device: "cpu", "cuda" or "auto".
        width: resnet20 width multiplier.
        data_dir: where Fashion-MNIST lies (see :mod:`attnrepro.data`); None: the default places.
        channels_last: channels_last model and batches.
        seed: seed of the model and of the data order.
        data_only: also time fetching batches without training.

    Returns:
        ``{"device", "device_name", "batch_size", "num_workers", "steps", "rounds", "rows": [{"loader", "mode",
        "images_per_s", "step_ms"} ...], "speedup": tensor / dataloader images_per_s (train_step)}``.
    """
    import torchvision.transforms as T

    from ..config import RunConfig
    from ..data import MEAN_STD, TensorLoader, load
    from ..models import build_model
    from .cuda import resolve_device
    from .metrics import env_info

    dev = resolve_device(device)
    cfg = RunConfig(dataset="fashion_mnist", data_dir=data_dir, batch_size=batch_size, seed=seed,
                    channels_last=channels_last, device=dev.type)
    bundle = load(cfg, "cpu")  # host copy: the DataLoader needs it there; the tensor loader gets a device copy
    images = bundle.train.images  # (N, 1, 28, 28) uint8
    labels = bundle.train.labels
    mean, std = MEAN_STD["fashion_mnist"]
    tensor_loader = TensorLoader(images.to(dev), labels.to(dev), batch_size=batch_size, mean=mean, std=std,
                                 train=True, augment=True, seed=seed, channels_last=channels_last)
    tf = T.Compose([T.RandomCrop(28, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    ds = _PILDataset(images[:, 0].numpy(), labels.numpy(), tf)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True,
                                     num_workers=num_workers, pin_memory=dev.type == "cuda",
                                     persistent_workers=num_workers > 0,
                                     generator=torch.Generator().manual_seed(seed))
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def dl_batches():
        for x, y in _forever(dl):
            yield (x.to(dev, non_blocking=True).contiguous(memory_format=fmt), y.to(dev, non_blocking=True))

    sources = {"tensor": _forever(tensor_loader), "dataloader": dl_batches()}

    torch.manual_seed(seed)
    model = build_model("resnet20", 10, in_chans=1, input_size=28, width=width).to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    crit = nn.CrossEntropyLoss()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def step(x, y):
        loss = crit(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times: dict[tuple[str, str], list[float]] = {}
    modes = ["train_step"] + (["data_only"] if data_only else [])
    model.train()
    for _ in range(rounds):
        for mode in modes:
            for name, it in sources.items():
                acc = times.setdefault((name, mode), [])
                fetch = times.setdefault((name, "fetch_in_loop"), []) if mode == "train_step" else None
                sync()
                t = time.perf_counter()
                for i in range(warmup + steps):
                    x, y = next(it)
                    if fetch is not None:
                        sync()
                        t_fetched = time.perf_counter()
                        step(x, y)
                    sync()
                    now = time.perf_counter()
                    if i >= warmup:
                        acc.append(now - t)
                        if fetch is not None:
                            fetch.append(t_fetched - t)
                    t = now
    rows = []
    for (name, mode), ts in times.items():
        med = statistics.median(ts)
        rows.append({"loader": name, "mode": mode, "images_per_s": batch_size / med, "step_ms": 1000 * med,
                     "images_per_s_best": batch_size / min(ts), "steps_measured": len(ts)})
    ips = {(r["loader"], r["mode"]): r["images_per_s"] for r in rows}
    env = env_info(dev)
    return {"device": dev.type, "device_name": env["device_name"], "torch": env["torch"],
            "num_threads": env["num_threads"], "batch_size": batch_size, "num_workers": num_workers,
            "steps": steps, "rounds": rounds, "warmup": warmup, "width": width, "channels_last": channels_last,
            "rows": rows, "speedup": ips[("tensor", "train_step")] / ips[("dataloader", "train_step")]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--channels-last", action="store_true")
    a = p.parse_args(argv)
    res = compare_loaders(steps=a.steps, rounds=a.rounds, warmup=a.warmup, batch_size=a.batch_size,
                          num_workers=a.num_workers, device=a.device, width=a.width, data_dir=a.data_dir,
                          channels_last=a.channels_last)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
