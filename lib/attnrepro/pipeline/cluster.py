"""What one run's cluster job asks for: a preset's ``cluster:`` section and ``--cluster KEY VALUE``, checked, and
turned into submitit's parameters, the sbatch text they give, and the torchrun rendezvous of a multi-node run.

Nothing here submits anything (that is :mod:`.jobs`) and nothing imports submitit at import time. The keys
(:data:`CLUSTER_KEYS`) are one job's resources, one job per run: ``nodes`` x ``gpus_per_node`` GPUs train one run.
Preset YAML::

    cluster:
      partition: gpu          # Slurm partition (--partition)
      gpus_per_node: 1        # GPUs of one run on each node (--gpus-per-node); > 1: torchrun on that node
      cpus_per_task: 16       # CPUs of the run on each node (--cpus-per-task); also its OMP_NUM_THREADS
      mem_gb: 64              # memory per node (--mem)
      timeout_min: 1440       # time limit of one job (--time); a run that needs longer is requeued and resumes
      nodes: 1                # > 1: one run across nodes, torchrun with a c10d rendezvous on the first node
"""
from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from ..config import ConfigError

__all__ = ["CLUSTER_KEYS", "ClusterSpec", "cluster_spec", "executor_parameters", "sbatch_text", "rendezvous_args",
           "node_command", "for_cluster", "RDZV_PORT_BASE"]


#: key -> (type, default, smallest value or None, help). A ``str`` key's default None leaves it to Slurm.
CLUSTER_KEYS: dict[str, tuple[type, Any, Any, str]] = {
    "partition": (str, None, None, "Slurm partition (--partition)"),
    "account": (str, None, None, "Slurm account (--account)"),
    "qos": (str, None, None, "Slurm quality of service (--qos)"),
    "constraint": (str, None, None, "Slurm node features (--constraint), e.g. h100"),
    "nodes": (int, 1, 1, "nodes of one run; > 1: torchrun across them with a c10d rendezvous"),
    "gpus_per_node": (int, 0, 0, "GPUs of one run on each node (--gpus-per-node)"),
    "cpus_per_task": (int, 1, 1, "CPUs of one run on each node (--cpus-per-task); its OMP_NUM_THREADS"),
    "mem_gb": (float, None, 0, "memory per node in GB (--mem); none: the partition's default"),
    "timeout_min": (int, 1440, 1, "time limit of one job in minutes (--time); then it is requeued and resumes"),
}


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """One run's job: the resources of :data:`CLUSTER_KEYS` (see the module docstring)."""
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: float | None = None
    timeout_min: int = 1440

    @property
    def nproc_per_node(self) -> int:
        """Processes of the run on each node: one per GPU, at least one."""
        return max(1, self.gpus_per_node)


def _value(key: str, value: Any, where: str) -> Any:
    typ, _, low, _ = CLUSTER_KEYS[key]
    if isinstance(value, str) and typ is not str:
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            pass
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
        if CLUSTER_KEYS[key][1] is None:
            return None
        raise ConfigError(f"{where}: {key} cannot be empty; give {typ.__name__} >= {low}")
    if typ is str:
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.,:&|=+-]+", value):
            raise ConfigError(f"{where}: {key}={value!r} must be a name (letters, digits, _ . , : & | = + -)")
        return value
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (typ is float or float(value).is_integer())
    if not ok or value < low or (typ is float and value <= 0):
        bound = f"> {low}" if typ is float else f">= {low}"
        raise ConfigError(f"{where}: {key}={value!r} must be {'a number' if typ is float else 'an integer'} "
                          f"{bound}")
    return typ(value)


def cluster_spec(section: Mapping[str, Any] | None = None, overrides: Sequence[Sequence[str]] = (),
                 where: str = "preset") -> ClusterSpec:
    """The :class:`ClusterSpec` of a preset's ``cluster:`` section with ``--cluster KEY VALUE`` pairs over it.

    Args:
        section: the preset's ``cluster`` mapping (None: the defaults).
        overrides: ``(key, value)`` pairs from the command line; values are read as YAML scalars.
        where: where the section comes from, for the messages.

    Raises :class:`ConfigError` (exit code 2) for an unknown key, naming the valid ones, or a bad value.
    """
    if section is not None and not isinstance(section, Mapping):
        raise ConfigError(f"{where}: cluster must be a mapping of {', '.join(CLUSTER_KEYS)}; got {section!r}")
    out: dict[str, Any] = {}
    for layer, src in ((dict(section or {}), f"{where}: cluster"), (list(overrides), "--cluster")):
        for key, value in (layer.items() if isinstance(layer, dict) else layer):
            if key not in CLUSTER_KEYS:
                import difflib
                close = difflib.get_close_matches(str(key), list(CLUSTER_KEYS), n=2)
                hint = f"; did you mean {' or '.join(close)}?" if close else ""
                raise ConfigError(f"{src}: unknown key {key!r}{hint} (valid keys: {', '.join(CLUSTER_KEYS)})")
            out[key] = _value(key, value, src)
    return ClusterSpec(**out)


def executor_parameters(spec: ClusterSpec, name: str = "attnrepro") -> dict[str, Any]:
    """submitit's ``AutoExecutor.update_parameters`` arguments for one run's job: one task per node (the run's
    first task executes the notebook; on other nodes torchrun joins its rendezvous)."""
    p: dict[str, Any] = {"name": name, "nodes": spec.nodes, "tasks_per_node": 1, "gpus_per_node": spec.gpus_per_node,
                         "cpus_per_task": spec.cpus_per_task, "timeout_min": spec.timeout_min}
    if spec.mem_gb is not None:
        p["mem_gb"] = spec.mem_gb
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(spec, key) is not None:
            p[f"slurm_{key}"] = getattr(spec, key)
    return p


def sbatch_text(spec: ClusterSpec, folder: str | Path, name: str = "attnrepro") -> str:
    """The sbatch script submitit writes for one run's job under ``spec``, made without a cluster.

    submitit's ``SlurmExecutor`` refuses to start where ``srun`` is missing; a subclass that says it is present makes
    the text (it submits nothing). The parameters go through the conversion ``AutoExecutor`` applies on Slurm:
    generic names (``timeout_min``, ``mem_gb``...) renamed by the executor, ``slurm_`` names unprefixed.
    """
    import submitit

    class _OfflineSlurmExecutor(submitit.SlurmExecutor):
        @classmethod
        def affinity(cls) -> int:
            return 1

    ex = _OfflineSlurmExecutor(folder)
    params = executor_parameters(spec, name)
    generic = {k: v for k, v in params.items() if not k.startswith("slurm_")}
    specific = {k[len("slurm_"):]: v for k, v in params.items() if k.startswith("slurm_")}
    ex.update_parameters(**{**ex._convert_parameters(generic), **specific})
    return ex._make_submission_file_text(ex._submitit_command_str, "%j")


#: the rendezvous port of a job is this plus a number from its job id (two jobs on one node rarely share it)
RDZV_PORT_BASE = 29500


def rendezvous_args(nodes: int, host: str, job_id: str) -> str:
    """torchrun's arguments for one run across ``nodes`` nodes: a c10d rendezvous on ``host`` (the job's first
    node), identified by the job id, so each node's torchrun finds the others whatever order they start in."""
    digits = re.sub(r"\D", "", str(job_id)) or "0"
    port = RDZV_PORT_BASE + int(digits) % 10000
    return (f"--nnodes={nodes} --rdzv_backend=c10d --rdzv_endpoint={host}:{port} "
            f"--rdzv_id=attnrepro-{shlex.quote(str(job_id))}")


def node_command(run, spec: ClusterSpec, host: str, job_id: str) -> list[str]:
    """The torchrun command one node of a multi-node run executes (every node runs the same one; the notebook on
    the first node starts it there, see :func:`attnrepro.pipeline.notebook.train`). ``run`` as :func:`for_cluster`
    gives it: its ``nproc_per_node`` is the notebook's."""
    from .notebook import torchrun_command
    nproc = run.options.get("nproc_per_node") or spec.nproc_per_node
    return torchrun_command(run.config, Path(run.out_dir).resolve(), nproc, rendezvous_args(spec.nodes, host, job_id))


def for_cluster(run, spec: ClusterSpec):
    """``run`` as its cluster job executes it: ``nproc_per_node`` one per GPU the job asks for on each node (when
    more than one), and for a multi-node run the rendezvous placeholder ``--nnodes N`` (the job replaces it with
    :func:`rendezvous_args` once it knows its first node). A preset that sets ``torchrun_args`` itself and asks for
    several nodes raises :class:`ConfigError`: one of them must say how the run spans machines."""
    opts = dict(run.options)
    nproc = opts.get("nproc_per_node", 1)
    if spec.gpus_per_node > 1 and nproc in (1, None):
        opts["nproc_per_node"] = spec.gpus_per_node
    if spec.nodes > 1:
        if opts.get("torchrun_args"):
            raise ConfigError(f"{run.name}: torchrun_args={opts['torchrun_args']!r} and cluster nodes={spec.nodes} "
                              "both say how the run spans machines; drop torchrun_args (the job sets the rendezvous)")
        opts["nproc_per_node"] = spec.nproc_per_node if nproc in (1, None) else nproc
        opts["torchrun_args"] = f"--nnodes={spec.nodes}"
    return dataclasses.replace(run, options=opts)
