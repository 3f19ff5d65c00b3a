"""attnrepro: a reproducibility suite for attention modules in CNNs (ExpAtt, AA, AW-conv; SE and CBAM baselines)."""
from .config import ConfigError, RunConfig

__version__ = "0.1.0"
__all__ = ["ConfigError", "RunConfig", "__version__"]
