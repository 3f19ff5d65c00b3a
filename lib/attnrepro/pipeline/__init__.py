"""The ablation pipeline: grids x presets x seeds -> run configs -> one papermill notebook execution per run.

``attnrepro run ABLATION... --preset NAME [-p KEY VALUE]... [--jobs N] [--force] [--runs-dir DIR]`` and
``attnrepro list [ABLATION...] [--preset NAME]``. Nothing here is from the papers: it is this suite's machinery.

The package, in the order a run goes through it: :mod:`.grids` (grids and presets -> :class:`Run` objects),
:mod:`.preflight` (every check before a notebook starts), :mod:`.runstate` (run-folder states, locks, reuse of
identical configs, failure records), :mod:`.execution` (papermill, the kernel, the worker pool), :mod:`.cluster`
and :mod:`.jobs` (a run's cluster job and the submission of the jobs), :mod:`.notebook`
(what the ablation notebooks call) and :mod:`.cli` (the ``run`` and ``list`` verbs). It never imports the analysis
half (:mod:`attnrepro.analysis`).

Files
-----
An *ablation* is a pair ``notebooks/<name>.ipynb`` + ``notebooks/<name>.yaml`` (the grid). A *preset* is
``notebooks/presets/<name>.yaml``. Another notebooks folder can be used with ``--notebooks-dir`` or the
``ATTNREPRO_NOTEBOOKS`` environment variable (the tests do).

Grid YAML (``notebooks/<ablation>.yaml``)::

    reference: gaussian            # the variant the report compares the others with (paired deltas)
    base: {attention: expatt}      # run-config keys every variant of this ablation shares
    variants:                      # explicit variants: stable name -> run-config keys it sets
      gaussian: {kernel: gaussian}
      uniform: {kernel: uniform}
    axes:                          # and/or a product: axis key -> {value name: value}; variant name is the
      radius_init: {r1: 1.0, r2: 2.0}    #   value names joined by '-' in axis order (e.g. 'r2-frozen');
      learn_radius: {learn: true, frozen: false}   # a value may also be a mapping of several keys
    variants_on_request: attention # optional: `--variants NAME` may also name any valid value of this key
                                   #   (e.g. a plugin's attention kind eca), run as {attention: NAME}

Preset YAML (``notebooks/presets/<preset>.yaml``)::

    description: one line for `attnrepro list`
    seeds: [0, 1, 2]
    jobs: 1                                            # default for --jobs
    base: {dataset: fashion_mnist, epochs: 30, ...}    # run-config keys of every run
    options: {nproc_per_node: 1}                       # notebook options (non-config parameters), optional
    cluster: {partition: gpu, gpus_per_node: 1}       # --executor submitit: each run's job (see .cluster)
    ablations:                                         # optional, per ablation:
      placement:
        base: {heads: 2}                               #   keys applied after the grid's base
        variants: {s4: {stages: [4]}}                  #   extra (or replaced) variants
        only: [none, s1, s4]                           #   run only these variants
    reuse_from: [cpu2]                                 # optional: other presets whose finished runs of an
                                                       #   identical config are reused (a follow-up preset)

A run's config is merged in this order, later wins: RunConfig defaults, preset ``base``, grid ``base``,
preset ``ablations.<name>.base``, the variant, ``seed``, CLI ``-p`` overrides. ``stages`` may also be written
``all``, ``firstN`` or ``lastN`` (resolved against the model's number of stages, so one grid serves 3-stage CIFAR
nets and 4-stage ImageNet ResNets). Every config is validated with :meth:`RunConfig.from_dict` before anything runs;
a bad ablation, preset, key or value exits with code 2 naming the valid choices.

Runs
----
Each run goes to ``<runs-dir>/<preset>/<ablation>/<variant>-s<seed>/`` (runs-dir default ``runs``, or
``ATTNREPRO_RUNS``) and holds ``variant.json`` (ablation, variant, seed, preset, reference, is_reference, params:
the keys the variant sets, config_hash), the engine's files (``config.json``, ``metrics.jsonl``, ``metrics.json``,
``checkpoint.pt``), the executed ``notebook.ipynb`` and ``log.txt`` (the kernel's stdout and stderr).

- Before any notebook starts, every run that will train is checked (:func:`check_runs`): the device
  (``device='cuda'`` without a GPU), the AMP mode, ``nproc_per_node`` against the GPUs a run gets and torchrun's
  presence, the dataset (where ``data_dir`` says, else the default places) and the sizes (the model is built on the
  meta device and given a batch of the dataset's shape). Any problem exits with code 2 and one message naming each
  problem and the runs it hits; nothing starts.
- A run whose ``metrics.json`` says ``finished`` with the config's hash is skipped; ``--force`` re-runs it.
- Runs of one config (the same hash: e.g. ``placement/none`` and ``baseline/none``) train once per preset. The first
  in order trains; the others wait for it (they are scheduled after it) and then :func:`reuse` it: their folders get
  copies of its ``config.json``, ``metrics.jsonl``, ``log.txt`` and ``metrics.json`` (not the checkpoint or the
  executed notebook), and their ``variant.json`` and ``metrics.json`` say ``reused_from: <preset>/<ablation>/<run>``
  (the folder that trained it), so a sum of ``wall_time_s`` counts that training once. A finished run of the same
  config in another folder of the preset is reused the same way (not with ``--force``). When the first fails, the
  others are recorded as failed with that reason and are retried with it next time.
- A run folder holding a *different* config (the grid or the preset changed) is emptied first, so the engine
  never resumes a checkpoint of another config. A failed run of the *same* config keeps its checkpoint and resumes;
  each attempt removes the earlier attempt's ``metrics.json`` and rewrites ``config.json``, so keys left out of the
  hash (``device``, ``data_dir``, ``num_workers``) may change between attempts and never come back with an old value.
- A run that fails (an exception in the notebook, a NaN the engine rejects, the kernel dying) has ``metrics.json``
  with ``status: failed`` and a ``reason`` (written here when the engine could not); the other runs go on and
  the command exits 1 after a summary table. A kernel that dies before it answers (it has run nothing) is started
  again, up to :data:`KERNEL_START_ATTEMPTS` times.
- Locks keep two pipelines on one runs folder from executing one config twice: one per config
  (``<preset>/.config-<hash>.lock``) and one per folder (``.<variant>-s<seed>.lock`` beside it). The second waits,
  then sees the run finished and skips (or reuses) it. The lock files are removed when the run ends; a waiting
  pipeline is never let in twice (see :func:`attnrepro._io.held_lock`).
- ``--jobs N`` executes N notebooks at once, each in its own process with its own kernel; each kernel gets
  ``OMP_NUM_THREADS = cores // N`` (unless set) and, when there are at least N GPUs, its own share of them
  through ``CUDA_VISIBLE_DEVICES``. Kernels talk to the runner over Unix sockets in a private temporary folder per
  kernel (ZeroMQ's IPC transport), so kernels started at once cannot collide on a TCP port.
- Notebooks run with the Jupyter kernel ``attnrepro`` (``make`` installs it; when it is missing it is installed
  for the current interpreter into ``sys.prefix``).

Cluster runs
------------
``--executor submitit`` submits one job per config that trains (Slurm, or ``--submitit-cluster local``), with the
resources of the preset's ``cluster:`` section and ``--cluster KEY VALUE`` (:mod:`.cluster`); the job executes the
same notebook into the same run folder (:mod:`.jobs`, which this package does not import: it needs submitit).
``--wait`` blocks until the jobs have ended; ``attnrepro list`` shows each run's job and its state.

Multi-GPU runs
--------------
One run on several GPUs of one machine: set the notebook option ``nproc_per_node`` (in a preset's ``options`` or
with ``-p nproc_per_node 8``). The notebook then does not train in its own kernel: it starts
``torchrun --standalone --nproc_per_node 8 -m attnrepro train -p KEY VALUE... --out RUN_DIR`` and waits for it, then
draws its figures from the run folder as usual; ``batch_size`` stays the global batch. ``torchrun_args``
(e.g. ``"--nnodes 2 --node_rank 0 --rdzv_endpoint host:29500"``, which replaces ``--standalone``) passes extra
arguments for several machines; then start the same ``attnrepro train`` command by hand on the other nodes. Example:
``attnrepro run baseline --preset imagenet -p data_dir /data/imagenet -p nproc_per_node 8``.
"""
from .execution import KERNEL_NAME, KERNEL_START_ATTEMPTS, ensure_kernel, execute, run_all, summary_table
from .grids import (RUNNER_KEYS, Run, base_preset, default_runs_dir, expand, grid_variants, list_ablations, list_presets,
                    load_grid, load_preset, notebook_parameters, notebooks_dir, resolve_stages, split_overrides)
from .preflight import check_runs, run_problems
from .runstate import find_twin, plan, protected, record_twin_failure, reuse, reuse_origin, run_state

__all__ = [
    "KERNEL_NAME", "KERNEL_START_ATTEMPTS", "RUNNER_KEYS", "Run", "notebooks_dir", "default_runs_dir",
    "list_ablations", "list_presets", "load_grid", "load_preset", "grid_variants", "resolve_stages",
    "notebook_parameters", "split_overrides", "expand", "check_runs", "run_problems", "run_state", "plan",
    "find_twin", "reuse", "record_twin_failure", "protected", "reuse_origin", "base_preset", "ensure_kernel",
    "execute", "run_all", "summary_table",
]
