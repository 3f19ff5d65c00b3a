"""Training engine: :func:`run_training` turns one RunConfig into one run folder (see :mod:`.loop`)."""
from .loop import NonFiniteLoss, RunDirConflict, param_groups, preflight, run_training
from .schedules import lr_at, make_schedule

__all__ = ["run_training", "preflight", "NonFiniteLoss", "RunDirConflict", "param_groups", "lr_at", "make_schedule"]
