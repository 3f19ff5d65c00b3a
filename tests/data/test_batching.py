"""attnrepro.data.batching, the parts its mutation run found unguarded: memory formats, ``max_batches``, the
defaults, the input check, augmentation independent of the global RNG (a resume sees the same batches), the seeds of
:class:`SeededSampler`, and :class:`DataLoaderWrapper`'s epoch and sampler plumbing."""
import pytest
import torch

from attnrepro.data import TensorLoader
from attnrepro.data.batching import DataLoaderWrapper, SeededSampler, SeededTransform


def images(n=24, c=3, side=6):
    return torch.randint(0, 256, (n, c, side, side), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def loader(n=24, c=3, **kw):
    kw = {"batch_size": 8, "mean": (0.0,) * c, "std": (1 / 255,) * c, "train": True, **kw}
    return TensorLoader(images(n, c), torch.arange(n), **kw)


def batches(ld, epoch=None):
    if epoch is not None:
        ld.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in ld]


def same(a, b):
    return len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))


@pytest.mark.parametrize("train", [True, False])
def test_memory_format_is_the_one_asked_for(train):
    x, _ = next(iter(loader(train=train, channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    x, _ = next(iter(loader(train=train)))                    # the default: contiguous
    assert x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("train", [True, False])
def test_max_batches_caps_the_batches(train):
    assert len(loader(train=train)) == 3
    ld = loader(train=train, max_batches=2)
    assert len(ld) == 2 and len(batches(ld, 1)) == 2
    assert len(loader(train=train, max_batches=5)) == 3        # a cap above the count changes nothing


def test_defaults_augment_with_seed_0_from_epoch_0():
    plain = batches(loader(augment=False), 0)
    default = batches(loader())                                # no set_epoch: epoch 0; seed 0; augmented
    assert same(default, batches(loader(seed=0, augment=True), 0))
    assert not same(default, plain)
    assert [y.tolist() for _, y in default] == [y.tolist() for _, y in plain]   # same order, other pixels


def test_the_input_check_names_the_shape():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) uint8 tensor, got \(24, 3, 6, 6\) torch.float32"):
        TensorLoader(images().float(), torch.arange(24), batch_size=8, mean=(0,), std=(1,), train=True)
    with pytest.raises(ValueError, match=r"got \(24, 6, 6\) torch.uint8"):
        TensorLoader(images()[:, 0], torch.arange(24), batch_size=8, mean=(0,), std=(1,), train=True)


def test_evaluation_batches_are_full_under_ddp():
    """Evaluation keeps ``batch_size`` per rank (only training splits one batch between the ranks)."""
    ld = loader(n=40, train=False, rank=1, world_size=2, batch_size=8)
    assert [len(y) for _, y in ld] == [8, 8, 4]
    assert [len(y) for _, y in loader(n=40, rank=1, world_size=2, batch_size=8)] == [4] * 5


def test_augmentation_is_a_function_of_seed_and_epoch_not_of_the_global_rng():
    """A resumed run restores the global RNG differently from where the epoch started; its batches are the same."""
    torch.manual_seed(1)
    a = batches(loader(seed=5), 3)
    torch.manual_seed(2)
    b = batches(loader(seed=5), 3)
    assert same(a, b)
    assert not same(a, batches(loader(seed=5), 4)) and not same(a, batches(loader(seed=6), 3))


def test_the_data_order_and_crops_are_those_the_records_were_trained_with():
    """Pinned: the first batch of epoch 2 of seed 3 (order, and the crop and flip of each image). A change here
    changes what every committed run record was trained on."""
    side, n = 4, 10
    img = (1 + torch.arange(side * side, dtype=torch.uint8)).view(1, 1, side, side).expand(n, 1, side, side)
    ld = TensorLoader(img.contiguous(), torch.arange(n), batch_size=4, mean=(0.0,), std=(1 / 255,), train=True,
                      pad=1, seed=3)
    ld.set_epoch(2)
    x, y = next(iter(ld))
    assert y.tolist() == PINNED_ORDER
    assert x[:, 0, 1].round().int().tolist() == PINNED_ROWS


PINNED_ORDER = [6, 5, 2, 9]
PINNED_ROWS = [[8, 7, 6, 5], [0, 9, 10, 11], [0, 4, 3, 2], [0, 8, 7, 6]]      # row 1 of each crop (pad 1, zeros)


def test_sampler_seeds_are_a_function_of_seed_epoch_and_rank():
    def seeds(rank=None, epoch=None, **kw):
        s = SeededSampler(range(1000), seed=7, **({} if rank is None else {"rank": rank}))
        if epoch is not None:
            s.set_epoch(epoch)
        torch.manual_seed(len(kw))                            # the global RNG plays no part
        return [sd for _, sd in s]

    base = seeds(epoch=0)
    assert seeds() == base == seeds(rank=0, epoch=0, x=1)     # defaults: rank 0, epoch 0
    assert len(set(base)) > 990 and max(base) > 2 ** 40       # a seed per sample, from a wide range
    assert seeds(rank=1, epoch=0) != base and seeds(epoch=1) != base
    assert [i for i, _ in SeededSampler(range(5), seed=1)] == list(range(5))
    pinned = SeededSampler(range(3), seed=7, rank=1)           # pinned, as the data order above
    pinned.set_epoch(2)
    assert [sd for _, sd in pinned] == [3856601323757680545, 4343120513768952039, 4330507349174794387]


def test_epoch_and_rank_seeds_wrap_into_63_bits():
    """Large run seeds (a seed stream adds 1,000,003 per stream) wrap into [0, 2^63), pinned."""
    from attnrepro.data.batching import _epoch_seed, _rank_seed
    assert _epoch_seed(10 ** 13, 3) == 776657963145247966
    assert _rank_seed(10 ** 9, 2, 1) == 3272221783273432836


class Recording(torch.utils.data.Sampler):
    def __init__(self, n):
        self.n, self.epochs = n, []

    def set_epoch(self, epoch):
        self.epochs.append(epoch)

    def __len__(self):
        return self.n

    def __iter__(self):
        return iter(range(self.n))


def test_set_epoch_reaches_the_wrapped_sampler_and_reseeds_the_order():
    inner = Recording(6)
    s = SeededSampler(inner, seed=1)
    s.set_epoch(4)
    assert inner.epochs == [4] and s.epoch == 4

    data = [(torch.full((3, 2, 2), i, dtype=torch.uint8), i) for i in range(12)]
    ds = SeededTransform(data, lambda x: x)

    def wrapper(seed=None, **kw):
        gen = torch.Generator()
        sampler = SeededSampler(torch.utils.data.RandomSampler(data, generator=gen), seed=seed or 0)
        dl = torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler)
        return DataLoaderWrapper(dl, device=torch.device("cpu"), mean=(0.0,) * 3, std=(1 / 255,) * 3,
                                 generator=gen, **({} if seed is None else {"seed": seed}), **kw)

    def order(w, epoch):
        w.set_epoch(epoch)
        assert w.epoch == epoch and w.loader.sampler.epoch == epoch
        return torch.cat([y for _, y in w]).tolist()

    w = wrapper()
    assert w.epoch == 0 and len(w) == 3 and w.num_samples == 12
    third = order(w, 3)
    second = order(w, 2)                                      # reseeded: as if epoch 3 had never run
    assert second == order(wrapper(seed=0), 2) and third == order(wrapper(), 3) and second != third
    assert sorted(second) == list(range(12))
    x, _ = next(iter(w))
    assert x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    x, _ = next(iter(wrapper(channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert len(wrapper(max_batches=2)) == 2 and len(list(wrapper(max_batches=2))) == 2
