"""attnrepro: a reproducibility suite for attention modules in CNNs (ExpAtt, AA, AW-conv; SE and CBAM baselines).

``attnrepro.register(name, kind=..., build=..., accepts=...)`` adds a module of one's own (:mod:`attnrepro.registry`;
the README's "Adding a module").
"""
from .config import ConfigError, RunConfig
from .registry import register

__version__ = "0.1.0"
__all__ = ["ConfigError", "RunConfig", "register", "__version__"]
