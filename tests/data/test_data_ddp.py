"""The ImageFolder loader under DDP: each rank draws its own augmentation from (seed, epoch, rank), whatever the
global RNG and the number of workers, and a resume continues each rank's sequence. On images that are all the
same image, so that a batch differs from another only by its augmentation."""
import hashlib
import json

import pytest
import torch

from attnrepro import RunConfig
from attnrepro import data as D
from data_files import write_identical_imagefolder
from ddp_helpers import torchrun


def config(root, **kw):
    return RunConfig.from_dict({**dict(dataset="imagefolder", data_dir=str(root), image_size=16, batch_size=8,
                                       eval_batch_size=8, num_workers=0, seed=3), **kw})


def digests(loader, epoch: int) -> list[str]:
    loader.set_epoch(epoch)
    return [hashlib.sha256(x.numpy().tobytes()).hexdigest()[:16] for x, _ in loader]


def rank_epochs(root, rank: int, epochs=(1, 2), **kw) -> dict[int, list[str]]:
    torch.manual_seed(RunConfig().seed)     # every rank seeds the global RNG alike (as run_training does)
    b = D.load(config(root, **kw), "cpu", rank=rank, world_size=2)
    return {e: digests(b.train, e) for e in epochs}


def test_ranks_draw_different_augmentations_and_a_resume_continues_each(tmp_path):
    write_identical_imagefolder(tmp_path)
    seqs = {r: rank_epochs(tmp_path, r) for r in (0, 1)}
    assert len(seqs[0][1]) == 2                       # 16 images: 8 per rank, 4 per rank and batch
    for e in (1, 2):
        assert not set(seqs[0][e]) & set(seqs[1][e]), e     # no batch of rank 0 is one of rank 1
        assert seqs[0][e] != seqs[0][3 - e]                 # nor the same batches every epoch
    for r in (0, 1):
        torch.manual_seed(12345)                            # whatever the global RNG holds after a restart
        fresh = D.load(config(tmp_path), "cpu", rank=r, world_size=2)
        assert digests(fresh.train, 2) == seqs[r][2]        # epoch 2 straight after a resume
    plain = D.load(config(tmp_path), "cpu")                 # one process: a seeded sequence too
    assert digests(plain.train, 1) == digests(D.load(config(tmp_path), "cpu").train, 1)


@pytest.mark.slow
def test_the_workers_do_not_change_the_batches(tmp_path):
    write_identical_imagefolder(tmp_path)
    assert rank_epochs(tmp_path, 1, num_workers=2) == rank_epochs(tmp_path, 1)


@pytest.mark.slow
def test_two_gloo_ranks_draw_different_augmentations(tmp_path):
    write_identical_imagefolder(tmp_path / "images")
    proc = torchrun(tmp_path, f"""
        import hashlib, json
        import torch.distributed as dist
        from attnrepro import RunConfig, data as D
        dist.init_process_group("gloo")
        rank = dist.get_rank()
        cfg = RunConfig.from_dict(dict(dataset="imagefolder", data_dir={str(tmp_path / "images")!r}, image_size=16,
                                       batch_size=8, eval_batch_size=8, num_workers=1, seed=3))
        def digests(loader, epoch):
            loader.set_epoch(epoch)
            return [hashlib.sha256(x.numpy().tobytes()).hexdigest()[:16] for x, _ in loader]
        torch.manual_seed(cfg.run_seed)
        b = D.load(cfg, "cpu")                 # rank and world size from the process group
        seq = {{e: digests(b.train, e) for e in (1, 2)}}
        torch.manual_seed(777)
        seq["resumed"] = digests(D.load(cfg, "cpu").train, 2)
        with open(f"{{sys.argv[1]}}.rank{{rank}}.json", "w") as f:
            json.dump(seq, f)
        dist.destroy_process_group()
    """, str(tmp_path / "seq"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    seqs = [json.loads((tmp_path / f"seq.rank{r}.json").read_text()) for r in (0, 1)]
    for e in ("1", "2"):
        assert len(seqs[0][e]) == 2 and not set(seqs[0][e]) & set(seqs[1][e]), e
    assert all(s["resumed"] == s["2"] for s in seqs)
