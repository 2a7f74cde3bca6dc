"""Training a RAN under accelerate: the configuration (``config``) and the loop (``loop``)."""

from ran.training.config import TrainConfig, resolve_config
from ran.training.loop import train

__all__ = ["TrainConfig", "resolve_config", "train"]
