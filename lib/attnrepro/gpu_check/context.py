"""What every step of the GPU check shares: the device, the sizes (real or dry-run), the output folder, and the
kinds each step measures."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["Ctx", "ROOT", "OPTIONAL", "WRN_KINDS", "COMPILE_KINDS", "DETERMINISM_KINDS"]


ROOT = Path(__file__).resolve().parents[3]


#: packages the suite uses beyond torch: missing ones are reported, and what needs them is skipped
OPTIONAL = ("fvcore", "papermill", "nbformat", "pytest", "tqdm", "pandas", "scipy", "matplotlib", "seaborn",
            "yaml", "filelock", "numpy")


#: CIFAR-100's split sizes (for the projected hours of the cifar100 preset)
CIFAR100_TRAIN, CIFAR100_TEST = 50_000, 10_000


#: the kinds timed on WRN-28-10 (every single kind and the AW paper's combinations)
WRN_KINDS = ("none", "expatt", "aa", "aw", "se", "cbam", "aw+se", "aw+cbam")


#: the kinds of the compiled 20-step runs (name -> extra -p keys)
COMPILE_KINDS = {"expatt-laplacian": {"attention": "expatt", "kernel": "laplacian"}, "aa": {"attention": "aa"},
                 "aw+se": {"attention": "aw+se"}}


DETERMINISM_KINDS = {"none": {}, "expatt-cauchy": {"attention": "expatt", "kernel": "cauchy"},
                     "aa": {"attention": "aa"}, "aw": {"attention": "aw"}}


def _cifar100_preset() -> dict:
    """The ``cifar100`` preset's base, with RunConfig's defaults for what it does not set."""
    from ..config import RunConfig
    path = ROOT / "notebooks" / "presets" / "cifar100.yaml"
    base: dict = {}
    if path.is_file():
        import yaml
        base = (yaml.safe_load(path.read_text()) or {}).get("base", {})
    return RunConfig.from_dict(base).to_dict()


class Ctx:
    """The device and the sizes of one check (``dry``: CPU, tiny)."""

    def __init__(self, dry: bool, out: Path):
        import torch
        self.dry, self.out = dry, out
        self.device = torch.device("cpu" if dry or not torch.cuda.is_available() else "cuda")
        preset = _cifar100_preset()
        self.preset = preset
        self.model = "resnet20" if dry else preset["model"]
        self.width = 0.25 if dry else float(preset.get("width", 1.0))
        self.batch = 4 if dry else int(preset["batch_size"])
        self.eval_batch = 8 if dry else int(preset["eval_batch_size"])
        self.warmup, self.repeats = (1, 2) if dry else (3, 10)
        self.steps = 2 if dry else 20

    def sync(self) -> None:
        import torch
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        import torch
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self, base: int = 0) -> float | None:
        import torch
        if self.device.type != "cuda":
            return None
        return (torch.cuda.max_memory_allocated(self.device) - base) / 2 ** 30

    def env(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "lib"), os.environ.get("PYTHONPATH", "")]),
               "ATTNREPRO_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        if self.dry:
            env.update(CUDA_VISIBLE_DEVICES="", ATTNREPRO_COMPILE_BACKEND="eager", OMP_NUM_THREADS="1")
        return env

    def device_key(self) -> str:
        return "cpu" if self.device.type == "cpu" else "cuda"
