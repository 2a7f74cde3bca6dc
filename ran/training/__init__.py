"""Training a RAN under accelerate: the configuration (``config``), the set-up (``setup``), the data
(``data``), the schedule (``schedule``), pickle-free checkpoints (``checkpoints``) and the loop (``loop``)."""

from ran.training.checkpoints import read_checkpoint
from ran.training.config import TrainConfig, resolve_config
from ran.training.loop import train

__all__ = ["TrainConfig", "read_checkpoint", "resolve_config", "train"]
