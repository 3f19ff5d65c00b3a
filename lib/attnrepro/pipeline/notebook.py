"""What the ablation notebooks call, and the source the notebooks are generated from.

An ablation notebook (``notebooks/<ablation>.ipynb``) is one training run: its ``parameters`` cell (papermill)
declares every run-config key (the vocabulary of :class:`~attnrepro.config.RunConfig`, ``attnrepro config``) plus
:data:`OPTIONS` (the run folder and a few plot and launch options); the next cells build the config with
:func:`config_from_namespace`, train with :func:`train` into ``out_dir`` and draw the figures of
:mod:`attnrepro.analysis.ablation_plots` from the run folder. The notebooks are committed without outputs and are written
by :func:`write_notebooks` (``python -m attnrepro.pipeline.notebook notebooks/``); ``tests/test_pipeline.py`` checks that the
committed files match it, so the notebooks and the config cannot drift apart: after adding a run-config key,
regenerate them.

``train`` runs :func:`attnrepro.train.run_training` in the kernel, or, with ``nproc_per_node > 1`` (or
``torchrun_args``), starts ``torchrun ... -m attnrepro train -p KEY VALUE ... --out OUT_DIR`` and waits for it (see
:mod:`attnrepro.pipeline`, "Multi-GPU runs").
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

from ..config import KEYS, RunConfig, describe

__all__ = ["OPTIONS", "ABLATION_NOTEBOOKS", "config_from_namespace", "train", "torchrun_command", "cli_value",
           "build_notebook", "write_notebooks"]

#: Notebook parameters that are not run-config keys: name -> (default, comment). ``out_dir`` is set by the runner.
OPTIONS: dict[str, tuple[Any, str]] = {
    "out_dir": ("runs/manual/run", "the run folder (the pipeline sets runs/<preset>/<ablation>/<variant>-s<seed>)"),
    "nproc_per_node": (1, "> 1: train through torchrun on this many GPUs of this machine"),
    "torchrun_args": ("", "extra torchrun arguments (several machines), e.g. '--nnodes 2 --rdzv_endpoint h:29500'"),
    "compare_siblings": (True, "figures also show the finished runs beside this one (same preset and ablation)"),
    "map_size": (15, "kernel notebook: side of the feature map on which the attention maps are drawn"),
}


def config_from_namespace(ns: Mapping[str, Any]) -> RunConfig:
    """The :class:`RunConfig` of the run-config keys defined in ``ns`` (a notebook's ``globals()``), validated."""
    return RunConfig.from_dict({k: ns[k] for k in KEYS if k in ns})


def cli_value(v: Any) -> str:
    """A config value as ``-p KEY VALUE`` text that :func:`attnrepro.config.coerce` reads back."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return repr(v) if isinstance(v, float) else str(v)


def torchrun_command(cfg: RunConfig, out_dir: str | Path, nproc_per_node: int, torchrun_args: str = "") -> list[str]:
    """``python -m torch.distributed.run [--standalone] --nproc_per_node N ... -m attnrepro train -p ... --out``."""
    extra = shlex.split(torchrun_args or "")
    multi_node = any(a.split("=")[0] in ("--nnodes", "--rdzv_endpoint", "--rdzv-endpoint", "--master_addr",
                                         "--master-addr") for a in extra)
    cmd = [sys.executable, "-m", "torch.distributed.run"] + ([] if multi_node else ["--standalone"])
    cmd += [f"--nproc_per_node={int(nproc_per_node)}", *extra, "-m", "attnrepro", "train", "--no-progress"]
    default = RunConfig().to_dict()
    for k, v in cfg.to_dict().items():
        if v != default[k]:
            cmd += ["-p", k, cli_value(v)]
    return cmd + ["--out", str(out_dir)]


def train(cfg: RunConfig, out_dir: str | Path, *, nproc_per_node: int = 1, torchrun_args: str = "") -> dict:
    """Train ``cfg`` into ``out_dir`` (in this process, or through torchrun); return ``metrics.json``'s content."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if int(nproc_per_node) <= 1 and not torchrun_args:
        from ..train import run_training
        return run_training(cfg, out, progress=False)
    cmd = torchrun_command(cfg, out, nproc_per_node, torchrun_args)
    print("$", shlex.join(cmd), flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", flush=True)
    rc = proc.wait()
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else None
    if rc != 0 or not metrics or metrics.get("status") != "finished":
        reason = (metrics or {}).get("reason") or f"torchrun exited with code {rc}"
        raise RuntimeError(f"distributed training failed: {reason}")
    return metrics


# ---------------------------------------------------------------------------- the notebooks' source
#: options every ablation notebook has, and the figure every one draws first
_RUN_OPTIONS = ["out_dir", "nproc_per_node", "torchrun_args", "compare_siblings"]
_CURVES = "ap.plot_curves(out_dir, siblings=compare_siblings);"

#: ablation -> (title, what it shows, run-config defaults that differ from RunConfig's, options used, figure code)
ABLATION_NOTEBOOKS: dict[str, dict[str, Any]] = {
    "kernel": {
        "title": "ExpAtt: which distance kernel?",
        "about": "ExpAtt with the `gaussian`, `laplacian`, `cauchy` or `uniform` kernel (`kernel`). The figures show "
                 "the training curves and each layer's attention map for the centre pixel at its learned radius.",
        "defaults": {"attention": "expatt"},
        "options": [*_RUN_OPTIONS, "map_size"],
        "figures": [_CURVES, "ap.plot_kernel_maps(out_dir, size=map_size);"],
    },
    "radius_init": {
        "title": "ExpAtt: initial radius, learned or frozen",
        "about": "ExpAtt (Gaussian) with `radius_init` (feature-map pixels) and `learn_radius`. The figures show the "
                 "training curves and the radius of every ExpAtt layer over training.",
        "defaults": {"attention": "expatt"},
        "options": _RUN_OPTIONS,
        "figures": [_CURVES, "ap.plot_radii(out_dir, siblings=compare_siblings);"],
    },
    "placement": {
        "title": "ExpAtt: in which stages?",
        "about": "ExpAtt in each single stage, in the last two and in all (`stages`), against no attention. The "
                 "figures show the training curves and top-1 accuracy against the MACs the attention adds.",
        "defaults": {"attention": "expatt"},
        "options": _RUN_OPTIONS,
        "figures": [_CURVES, "ap.plot_accuracy_vs_macs(out_dir, siblings=compare_siblings);"],
    },
    "baseline": {
        "title": "Attention modules at the same depth and recipe",
        "about": "No attention, SE, CBAM, AA, AW-convolution and ExpAtt (`attention`) on one backbone and one "
                 "recipe. The figures show the training curves and accuracy, parameters and MACs per module.",
        "defaults": {},
        "options": _RUN_OPTIONS,
        "figures": [_CURVES, "ap.plot_cost_accuracy(out_dir, siblings=compare_siblings);"],
    },
}


def _parameters_source(ablation: str) -> str:
    spec = ABLATION_NOTEBOOKS[ablation]
    lines = ["# Parameters (papermill). `attnrepro run` sets all of them; run by hand, edit them here.",
             "# Run-folder and figure options:"]
    for name in spec["options"]:
        default, comment = OPTIONS[name]
        if name == "out_dir":
            default = f"runs/manual/{ablation}"
        lines.append(f"{name} = {default!r}  # {comment}")
    lines.append("# The run config: every key of `attnrepro config`, with its default.")
    for row in describe():
        v = spec["defaults"].get(row["key"], row["default"])
        lines.append(f"{row['key']} = {v!r}")
    return "\n".join(lines)


def build_notebook(ablation: str):
    """The committed (output-free) notebook of ``ablation`` as an ``nbformat`` node."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
    spec = ABLATION_NOTEBOOKS[ablation]
    cells = [
        new_markdown_cell(f"# {spec['title']}\n\n{spec['about']}\n\n"
                          f"One execution of this notebook is one training run (one variant, one seed). "
                          f"`attnrepro run {ablation} --preset smoke` executes it over the grid in "
                          f"`{ablation}.yaml`; the results are the files of `out_dir` (`metrics.json`, "
                          f"`metrics.jsonl`, `config.json`, `variant.json`)."),
        new_code_cell(_parameters_source(ablation), metadata={"tags": ["parameters"]}),
        new_code_cell("%matplotlib inline\n"
                      "from attnrepro.analysis import ablation_plots as ap\n"
                      "from attnrepro.pipeline.notebook import config_from_namespace, train\n\n"
                      "cfg = config_from_namespace(globals())\n"
                      "metrics = train(cfg, out_dir, nproc_per_node=nproc_per_node, torchrun_args=torchrun_args)\n"
                      "ap.summary(metrics)"),
        new_markdown_cell("## Figures"),
    ]
    cells += [new_code_cell(code) for code in spec["figures"]]
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "attnrepro", "display_name": "attnrepro", "language": "python"},
        "language_info": {"name": "python"}})
    for i, c in enumerate(nb.cells):
        c["id"] = f"{ablation}-{i}"   # stable cell ids: regenerating gives identical files
    nbformat.validate(nb)
    return nb


def write_notebooks(nb_dir: str | Path, ablations=None) -> list[Path]:
    """Write ``<nb_dir>/<ablation>.ipynb`` for ``ablations`` (default: all four)."""
    import nbformat
    out = []
    for a in ablations or ABLATION_NOTEBOOKS:
        p = Path(nb_dir) / f"{a}.ipynb"
        nbformat.write(build_notebook(a), str(p))
        out.append(p)
    return out


if __name__ == "__main__":
    for p in write_notebooks(sys.argv[1] if len(sys.argv) > 1 else "notebooks"):
        print(p)
