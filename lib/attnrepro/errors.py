"""The suite's error for bad command-line input (the other one, :class:`~attnrepro.config.ConfigError`, is about
run-config keys and values). Both exit with code 2 and a one-line reason before anything trains."""
from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """Bad command-line input that is not a config value (a missing file, an unknown ablation...)."""
