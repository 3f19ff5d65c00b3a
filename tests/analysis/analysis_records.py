"""Run folders written here in the run contract's format (with a failed run, an incomplete run and a missing seed),
with known numbers: the analysis tests compare what the suite computes from them with these numbers."""
from __future__ import annotations

import json
from pathlib import Path


PRESET = "tiny"


EPOCHS = 12


# (ablation, variant, seeds, config, reference?) ; final top-1 = BASE[variant] + NOISE[seed] (+ ablation offset)
GRID = {
    "baseline": {"ref": "none", "base": {"attention": "none"},
                 "variants": {"none": {"attention": "none"}, "expatt": {"attention": "expatt"},
                              "aa": {"attention": "aa"}, "se": {"attention": "se"}}},
    "kernel": {"ref": "gaussian", "base": {"attention": "expatt"},
               "variants": {"gaussian": {"kernel": "gaussian"}, "uniform": {"kernel": "uniform"}}},
    "radius_init": {"ref": "r2-learn", "base": {"attention": "expatt", "kernel": "gaussian"},
                    "variants": {"r2-learn": {"radius_init": 2.0}, "r0.5-learn": {"radius_init": 0.5}}},
    "placement": {"ref": "none", "base": {"attention": "expatt"},
                  "variants": {"none": {"attention": "none"}, "s3": {"stages": [3]}}},
}


SEEDS = (0, 1, 2)


TOP1 = {"none": 85.0, "expatt": 87.0, "aa": 82.0, "se": 85.1, "gaussian": 86.0, "uniform": 84.0,
        "r2-learn": 86.0, "r0.5-learn": 85.5, "s3": 86.5}


NOISE = {0: 0.0, 1: 0.4, 2: -0.3}


PARAMS = {"none": 270_000, "expatt": 268_000, "aa": 280_000, "se": 272_000}


FAILED = ("baseline", "aa", 1)            # metrics.json status failed


INCOMPLETE = ("kernel", "uniform", 2)     # metrics.jsonl only


MISSING = ("baseline", "se", 2)           # no folder at all


FAIL_REASON = "RuntimeError: CUDA out of memory (fixture)"


def top1(ablation: str, variant: str, seed: int) -> float:
    jitter = 0.1 * seed * (len(variant) % 3)  # so that paired deltas differ by seed
    return TOP1[variant] + NOISE[seed] + jitter


def _write(path: Path, obj) -> None:
    path.write_text(json.dumps(obj))


def write_runs(root: Path, preset: str = PRESET, epochs: int = EPOCHS) -> Path:
    """Run folders in the contract's format under root/preset; returns root."""
    for ablation, g in GRID.items():
        for variant, keys in g["variants"].items():
            for seed in SEEDS:
                if (ablation, variant, seed) == MISSING:
                    continue
                d = root / preset / ablation / f"{variant}-s{seed}"
                d.mkdir(parents=True)
                cfg = {"dataset": "fashion_mnist", "model": "resnet20", "epochs": epochs, "seed": seed,
                       "kernel": "gaussian", "radius_init": 2.0, "learn_radius": True, "stages": None,
                       "max_steps": 0, "train_subset": 0, **g["base"], **keys}
                _write(d / "variant.json", {"ablation": ablation, "variant": variant, "seed": seed, "preset": preset,
                                            "is_reference": variant == g["ref"], "params": keys})
                _write(d / "config.json", {**cfg, "config_hash": f"h{ablation}{variant}{seed}"})
                expatt = cfg["attention"] == "expatt"
                final = top1(ablation, variant, seed)
                n_ep = epochs if (ablation, variant, seed) not in (FAILED, INCOMPLETE) else 2
                lines = []
                for e in range(1, n_ep + 1):
                    r = cfg["radius_init"] * (1 + 0.05 * e) + 0.01 * seed
                    lines.append({"epoch": e, "train_loss": 1.0 / e, "train_top1": final - 5 + e * 0.1,
                                  "val_loss": 1.2 / e, "val_top1": final - (epochs - e) * 0.5, "val_top5": 99.0,
                                  "lr": 0.1, "images_per_s": 1000.0 + seed, "epoch_time_s": 2.0,
                                  "radius": {"layer3.0.conv1": [r], "layer3.1.conv1": [r * 1.1]} if expatt else {}})
                (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
                if (ablation, variant, seed) == INCOMPLETE:
                    continue
                failed = (ablation, variant, seed) == FAILED
                _write(d / "metrics.json", {
                    "status": "failed" if failed else "finished", "reason": FAIL_REASON if failed else None,
                    "config": cfg, "config_hash": f"h{ablation}{variant}{seed}",
                    "env": {"python": "3.11.2", "torch": "2.14.1", "torchvision": "0.29.1", "device": "cpu",
                            "device_name": "cpu", "git_commit": "abc123"},
                    "wall_time_s": 10.0, "epochs_completed": n_ep,
                    "final": None if failed else {"val_top1": final, "val_top5": 99.0, "val_loss": 0.1,
                                                  "train_loss": 0.1, "train_top1": 90.0},
                    "best_val_top1": None if failed else final,
                    "params": PARAMS.get(variant, 268_000), "macs": 41_000_000 + PARAMS.get(variant, 268_000),
                    "images_per_s": 1000.0 + seed, "peak_mem_mb": 100.0,
                    "radius": lines[-1]["radius"]})
                (d / "log.txt").write_text("fixture\n")
    return root
