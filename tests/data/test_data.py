"""attnrepro.data: each dataset kind from small files in its real on-disk format; on-device batching."""
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data_files import make_fashion

from attnrepro import RunConfig
from attnrepro import data as D


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("ATTNREPRO_OFFLINE", "1")


def unnormalize(x, name):
    mean, std = D.MEAN_STD[name]
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (x * s + m) * 255


def all_val(bundle):
    xs, ys = zip(*bundle.val)
    return torch.cat(xs), torch.cat(ys)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_idx_files(tmp_path, gz):
    arrays = make_fashion(tmp_path, gz=gz)
    cfg = RunConfig(dataset="fashion_mnist", data_dir=str(tmp_path), batch_size=8, eval_batch_size=7)
    b = D.load(cfg, "cpu")
    assert (b.num_classes, b.in_chans, b.input_size, b.train_len, b.val_len) == (10, 1, 28, 40, 20)
    assert b.source == str(tmp_path)
    x, y = all_val(b)
    assert x.shape == (20, 1, 28, 28) and x.dtype == torch.float32
    assert torch.equal(y, torch.from_numpy(arrays["test_y"]))
    assert torch.allclose(unnormalize(x, "fashion_mnist")[:, 0], torch.from_numpy(arrays["test_x"]).float(), atol=1e-3)
    assert len(b.train) == 5
    xb, yb = next(iter(b.train))
    assert xb.shape == (8, 1, 28, 28) and yb.dtype == torch.int64


def test_fashion_mnist_debian_files_when_installed():
    d = Path(D.FASHION_MNIST_DIRS[0])
    if not (d / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip("dataset-fashion-mnist is not installed")
    b = D.load(RunConfig(dataset="fashion_mnist"), "cpu")
    assert (b.train_len, b.val_len, b.source) == (60000, 10000, str(d))


def test_idx_rejects_a_bad_magic_number(tmp_path):
    p = tmp_path / "x-idx3-ubyte"
    p.write_bytes(struct.pack(">I", 0x0D03) + b"\0" * 16)
    with pytest.raises(D.DataError, match="magic"):
        D.read_idx(p)
    p.write_bytes(struct.pack(">IIII", 0x0803, 2, 3, 3) + b"\0" * 5)  # 18 bytes promised, 5 given
    with pytest.raises(D.DataError, match="header says"):
        D.read_idx(p)


def test_missing_fashion_mnist_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(D.sources, "FASHION_MNIST_DIRS", [str(tmp_path / "debian")])
    monkeypatch.setenv("ATTNREPRO_DATA", str(tmp_path / "cache"))
    with pytest.raises(D.DataNotFoundError) as e:
        D.load(RunConfig(dataset="fashion_mnist"), "cpu")
    msg = str(e.value)
    assert str(tmp_path / "debian") in msg and str(tmp_path / "cache" / "FashionMNIST" / "raw") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "data_dir" in msg
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("dataset", ["fashion_mnist", "cifar10", "cifar100", "imagefolder"])
@pytest.mark.parametrize("kind", ["missing", "empty", "file"])
def test_a_given_data_dir_is_never_replaced(tmp_path, monkeypatch, dataset, kind):
    """A data_dir that does not hold the dataset is an error naming it, even when the default places have the data."""
    debian = tmp_path / "debian"
    make_fashion(debian)
    monkeypatch.setattr(D.sources, "FASHION_MNIST_DIRS", [str(debian)])
    cache = tmp_path / "cache"
    make_fashion(cache / "FashionMNIST" / "raw")
    write_cifar(cache, "cifar10")
    write_cifar(cache, "cifar100")
    monkeypatch.setenv("ATTNREPRO_DATA", str(cache))
    given = tmp_path / "given"
    if kind == "empty":
        given.mkdir()
    elif kind == "file":
        given.write_text("not a folder")
    with pytest.raises(D.DataNotFoundError) as e:
        D.locate(RunConfig(dataset=dataset, data_dir=str(given)))
    msg = str(e.value)
    assert f"data_dir={str(given)!r}" in msg, msg
    what = {"missing": "does not exist", "file": "is not a folder", "empty": "is not in data_dir"}[kind]
    assert what in msg, msg
    expected = {"fashion_mnist": "train-images-idx3-ubyte", "cifar10": "cifar-10-batches-py",
                "cifar100": "cifar-100-python", "imagefolder": "train/<class>"}[dataset]
    assert expected in msg, msg
    assert str(debian) not in msg and str(cache) not in msg
    assert kind != "missing" or not given.exists()
    # without data_dir the search order finds the default copies
    if dataset != "imagefolder":
        assert D.locate(RunConfig(dataset=dataset)) in (debian, cache / "cifar-10-batches-py",
                                                        cache / "cifar-100-python")


def write_cifar(root: Path, name: str, n_per_batch=6, seed=0):
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        d, files, key, ncls = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], \
            b"labels", 10
    else:
        d, files, key, ncls = root / "cifar-100-python", ["train", "test"], b"fine_labels", 100
    d.mkdir(parents=True)
    out = {}
    for f in files:
        x = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        y = rng.integers(0, ncls, n_per_batch).tolist()
        entry = {b"data": x, key: y, b"filenames": [b"x.png"] * n_per_batch}
        if name == "cifar100":
            entry[b"coarse_labels"] = [0] * n_per_batch
        with open(d / f, "wb") as fh:
            pickle.dump(entry, fh)
        out[f] = (x, y)
    return out


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_from_python_pickles(tmp_path, name):
    batches = write_cifar(tmp_path, name)
    b = D.load(RunConfig(dataset=name, data_dir=str(tmp_path), batch_size=4), "cpu")
    n_train = 30 if name == "cifar10" else 6
    assert (b.num_classes, b.in_chans, b.input_size, b.train_len, b.val_len) == \
        ((10 if name == "cifar10" else 100), 3, 32, n_train, 6)
    x, y = all_val(b)
    test_x, test_y = batches["test_batch" if name == "cifar10" else "test"]
    assert y.tolist() == test_y
    assert torch.allclose(unnormalize(x, name), torch.from_numpy(test_x).float().view(-1, 3, 32, 32), atol=1e-3)
    # data_dir may also name the batches folder itself
    b2 = D.load(RunConfig(dataset=name, data_dir=b.source), "cpu")
    assert b2.train_len == n_train


def test_missing_cifar_is_a_clear_error(tmp_path):
    with pytest.raises(D.DataNotFoundError, match="cifar-10-batches-py"):
        D.locate(RunConfig(dataset="cifar10", data_dir=str(tmp_path / "nothing")))
    assert not (tmp_path / "nothing").exists()


def write_imagefolder(root: Path, classes=("cat", "dog"), n=3, size=(20, 24)):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / c / f"{i}.png")


def test_imagefolder_from_png_folders(tmp_path):
    write_imagefolder(tmp_path)
    cfg = RunConfig(dataset="imagefolder", data_dir=str(tmp_path), image_size=16, batch_size=4, num_workers=0,
                    eval_batch_size=4)
    b = D.load(cfg, "cpu")
    assert (b.num_classes, b.in_chans, b.input_size, b.train_len, b.val_len) == (2, 3, 16, 6, 6)
    b.train.set_epoch(1)
    batches = list(b.train)
    assert len(batches) == 1 and batches[0][0].shape == (4, 3, 16, 16) and batches[0][0].dtype == torch.float32
    x, y = all_val(b)
    assert x.shape == (6, 3, 16, 16) and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]


def test_imagefolder_without_val_is_a_clear_error(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(D.DataNotFoundError, match="val"):
        D.locate(RunConfig(dataset="imagefolder", data_dir=str(tmp_path)))


def test_synthetic_is_seeded_and_shaped_like_cifar():
    b1 = D.load(RunConfig(dataset="synthetic"), "cpu")
    b2 = D.load(RunConfig(dataset="synthetic"), "cpu")
    assert (b1.in_chans, b1.input_size, b1.num_classes, b1.train_len) == (3, 32, 10, D.SYNTHETIC_TRAIN)
    assert torch.equal(b1.train.images, b2.train.images) and torch.equal(b1.val.labels, b2.val.labels)


def reference_crop_flip(x, offsets, flips, pad):
    xp = F.pad(x, (pad,) * 4)
    H, W = x.shape[-2:]
    out = []
    for i in range(len(x)):
        oy, ox = offsets[i].tolist()
        c = xp[i, :, oy:oy + H, ox:ox + W]
        out.append(c.flip(-1) if flips[i] else c)
    return torch.stack(out)


def test_random_crop_flip_matches_a_per_image_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 9, 7), generator=g, dtype=torch.uint8)
    offsets = torch.randint(0, 9, (16, 2), generator=g)
    flips = torch.rand(16, generator=g) < 0.5
    got = D.random_crop_flip(x, offsets, flips, 4)
    assert torch.equal(got, reference_crop_flip(x, offsets, flips, 4))
    # offset (pad, pad) without flip is the identity
    same = D.random_crop_flip(x, torch.full((16, 2), 4), torch.zeros(16, dtype=torch.bool), 4)
    assert torch.equal(same, x)


def loader(n=50, batch=8, **kw):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    return D.TensorLoader(images, torch.arange(n), batch_size=batch, mean=(0.0,), std=(1 / 255,), train=True,
                          augment=False, **kw)


def order(ld, epoch):
    ld.set_epoch(epoch)
    return torch.cat([y for _, y in ld]).tolist()


def test_tensor_loader_order_is_a_function_of_seed_and_epoch():
    a, b = loader(seed=1), loader(seed=1)
    assert order(a, 3) == order(b, 3)
    assert order(a, 3) != order(a, 4)
    assert order(a, 3) != order(loader(seed=2), 3)
    o = order(a, 5)
    assert len(o) == 48 and len(set(o)) == 48  # full batches only; no sample twice
    assert len(a) == 6
    assert len(loader(n=5, batch=8)) == 1 and len(order(loader(n=5, batch=8), 0)) == 5  # small set: one batch


def test_tensor_loader_shards_ranks():
    whole = order(loader(seed=1, batch=8), 2)
    parts = [order(loader(seed=1, batch=8, rank=r, world_size=2), 2) for r in range(2)]
    assert set(parts[0]).isdisjoint(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(whole)


def test_tensor_loader_normalises_and_formats():
    ld = loader(batch=8, channels_last=True)
    ld.set_epoch(0)
    x, y = next(iter(ld))
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x[:, 0, 0, 0], y.float())  # mean 0, std 1/255 -> the pixel value


def test_subset_and_val_split_are_fixed_and_disjoint():
    cfg = RunConfig(dataset="synthetic", val_split=0.1, train_subset=100, seed=0)
    b = D.load(cfg, "cpu")
    assert (b.train_len, b.val_len) == (100, 205)
    b2 = D.load(cfg.replace(seed=7), "cpu")  # the run seed does not move the subset
    assert torch.equal(b.train.images, b2.train.images) and torch.equal(b.val.images, b2.val.images)
    full = D.load(RunConfig(dataset="synthetic"), "cpu").train.images.flatten(1)
    train_rows = {tuple(r.tolist()) for r in b.train.images.flatten(1)[:, :16]}
    val_rows = {tuple(r.tolist()) for r in b.val.images.flatten(1)[:, :16]}
    assert train_rows.isdisjoint(val_rows)
    assert len(full) == D.SYNTHETIC_TRAIN
