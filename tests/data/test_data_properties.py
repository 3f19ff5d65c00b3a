"""Properties of the data path that a plausible wrong version breaks: the held-out split and the training subset
(disjoint, complete, of the stated sizes, fixed), the random-crop offsets (every value of ``[0, 2 * pad]``, both
flips, each sample as :func:`random_crop_flip` crops it) and the evaluation order (every sample once, in order)."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from attnrepro import RunConfig
from attnrepro import data as D
from attnrepro.data import _split_indices

FEW = settings(max_examples=40, deadline=None)


@FEW
@given(n=st.integers(1, 400), val_split=st.sampled_from([0.0, 0.001, 0.05, 0.1, 0.3, 0.5, 0.9]),
       subset=st.integers(0, 450))
def test_split_indices_are_disjoint_complete_and_of_the_stated_sizes(n, val_split, subset):
    train, val = _split_indices(n, SimpleNamespace(val_split=val_split, train_subset=subset))
    assert train.dtype.kind == "i" and len(set(train.tolist())) == len(train)
    assert list(train) == sorted(train) and 0 <= train.min(initial=0) and train.max(initial=0) < n
    if val_split == 0:
        assert val is None
        held = set()
    else:
        n_val = max(1, int(round(val_split * n)))
        assert len(val) == n_val and list(val) == sorted(val) and len(set(val.tolist())) == n_val
        assert 0 <= val.min() and val.max() < n
        held = set(val.tolist())
    assert held.isdisjoint(train.tolist())                    # no held-out image is trained on
    rest = n - len(held)
    if subset and subset < rest:
        assert len(train) == subset                           # a subset of the images not held out
    else:
        assert set(train.tolist()) | held == set(range(n))   # together they cover the training set
    # fixed: the same call gives the same indices
    again, val2 = _split_indices(n, SimpleNamespace(val_split=val_split, train_subset=subset))
    assert np.array_equal(train, again) and (val is None) == (val2 is None)
    assert val is None or np.array_equal(val, val2)


def test_load_trains_on_the_split_it_states():
    """Through :func:`load`: the train and validation images are the training set's rows of the split indices."""
    cfg = RunConfig(dataset="synthetic", val_split=0.1, train_subset=0, seed=0)
    b = D.load(cfg, "cpu")
    arrays = D.sources._synthetic()
    tr, va = _split_indices(len(arrays["train_x"]), cfg)
    assert torch.equal(b.train.images, torch.from_numpy(arrays["train_x"][tr]))
    assert torch.equal(b.val.images, torch.from_numpy(arrays["train_x"][va]))
    assert torch.equal(b.val.labels, torch.from_numpy(arrays["train_y"][va]).to(b.val.labels.dtype))
    assert b.train_len + b.val_len == D.SYNTHETIC_TRAIN


def positions(n, side):
    """``n`` images whose pixel (r, c) holds ``1 + r * side + c`` (never 0, the padding): a crop tells its offset."""
    img = 1 + torch.arange(side * side, dtype=torch.uint8).view(1, 1, side, side)
    return img.expand(n, 1, side, side).contiguous()


def offsets_of(crops, side, pad):
    """(row offset, column offset, flipped) of each crop of :func:`positions`, read from a real pixel."""
    out = []
    for c in crops[:, 0].round().long():
        i, j = (c > 0).nonzero()[0].tolist()
        r, col = divmod(int(c[i, j]) - 1, side)
        row_vals = c[i][c[i] > 0]
        flipped = bool(row_vals[0] > row_vals[-1])
        jj = side - 1 - j if flipped else j                   # the column the crop read before the mirror
        out.append((r + pad - i, col + pad - jj, flipped))
    return out


@settings(max_examples=8, deadline=None)
@given(pad=st.integers(1, 4), seed=st.integers(0, 2 ** 31), epoch=st.integers(0, 50))
def test_crop_offsets_cover_their_whole_range_and_both_flips(pad, seed, epoch):
    side, n = 2 * pad + 2, 300
    ld = D.TensorLoader(positions(n, side), torch.zeros(n, dtype=torch.int64), batch_size=n, mean=(0.0,),
                        std=(1 / 255,), train=True, augment=True, pad=pad, seed=seed)
    ld.set_epoch(epoch)
    (x, _), = list(ld)
    got = offsets_of(x, side, pad)
    rows, cols, flips = ({g[k] for g in got} for k in range(3))
    assert rows == set(range(2 * pad + 1)) and cols == set(range(2 * pad + 1))   # [0, 2 pad], both ends included
    assert flips == {False, True}
    # each crop is the reference crop of its offset: the loader crops what it draws
    for img, (oy, ox, fl) in zip(x[:20], got[:20]):
        ref = D.random_crop_flip(positions(1, side), torch.tensor([[oy, ox]]), torch.tensor([fl]), pad)[0]
        assert torch.equal(img.round().to(torch.uint8), ref)


def test_without_augment_the_training_images_are_untouched():
    side, n = 6, 40
    ld = D.TensorLoader(positions(n, side), torch.arange(n), batch_size=8, mean=(0.0,), std=(1 / 255,),
                        train=True, augment=False, seed=1)
    ld.set_epoch(1)
    for x, _ in ld:
        assert torch.equal(x.round().to(torch.uint8), positions(len(x), side))


@pytest.mark.parametrize("world", [1, 3])
@pytest.mark.parametrize("n,batch", [(17, 5), (20, 5), (3, 8)])
def test_evaluation_sees_every_sample_once_in_order(n, batch, world):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1)
    parts = []
    for rank in range(world):
        ld = D.TensorLoader(images, torch.arange(n), batch_size=batch, mean=(0.0,), std=(1 / 255,), train=False,
                            rank=rank, world_size=world)
        ys = [y for _, y in ld]
        assert len(ys) == len(ld) and all(len(y) <= batch for y in ys)
        mine = torch.cat(ys).tolist()
        assert mine == list(range(rank, n, world))
        parts += mine
    assert sorted(parts) == list(range(n))


@FEW
@given(n=st.integers(1, 60), batch=st.integers(1, 16), world=st.integers(1, 3), seed=st.integers(0, 99),
       epoch=st.integers(0, 9))
@example(n=3, batch=8, world=2, seed=0, epoch=0)            # a set smaller than one batch, split between ranks
def test_training_batches_are_full_distinct_and_split_between_ranks(n, batch, world, seed, epoch):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1)
    seen, sizes = [], []
    for rank in range(world):
        ld = D.TensorLoader(images, torch.arange(n), batch_size=batch, mean=(0.0,), std=(1 / 255,), train=True,
                            augment=False, seed=seed, rank=rank, world_size=world)
        ld.set_epoch(epoch)
        ys = [y for _, y in ld]
        per = max(1, batch // world)
        assert len(ys) == len(ld) == max(1, n // (per * world))
        if n >= per * world:
            assert all(len(y) == per for y in ys)              # full batches only
        seen += torch.cat(ys).tolist()
        sizes.append([len(y) for y in ys])
    assert n < world or all(s == sizes[0] for s in sizes)      # every rank steps with batches of one size
    assert len(seen) == len(set(seen))                         # no sample twice in an epoch, across the ranks
    assert set(seen) <= set(range(n))
