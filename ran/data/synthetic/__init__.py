"""The synthetic FERPlus-style dataset of ``ran demo``: faces drawn procedurally (``faces``) and written as a
dataset folder (``generator``)."""

from __future__ import annotations

from ran.data.synthetic.generator import (
    SYNTHETIC_DESCRIPTION,
    build_synthetic,
    synthetic_face,
    write_synthetic,
)

__all__ = ["SYNTHETIC_DESCRIPTION", "build_synthetic", "synthetic_face", "write_synthetic"]
