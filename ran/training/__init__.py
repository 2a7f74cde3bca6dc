"""Training a RAN under accelerate: the configuration (``config``), the set-up (``setup``), the data
(``data``), the schedule (``schedule``), pickle-free checkpoints (``checkpoints``) and the loop (``loop``).

The names below are imported on first use: ``ran train --help`` reads ``config`` without the loop's torch."""

from ran.lazy import lazy_attributes

__all__ = ["TrainConfig", "read_checkpoint", "resolve_config", "train"]

__getattr__ = lazy_attributes(
    __name__,
    {
        "read_checkpoint": "ran.modelio.checkpoints",
        "TrainConfig": "ran.training.config",
        "resolve_config": "ran.training.config",
        "train": "ran.training.loop",
    },
)
