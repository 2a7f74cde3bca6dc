"""Values the command-line parsers and the library share, in a module that imports nothing heavy (so a
parser can show them without importing torch)."""

from __future__ import annotations

# No trained RAN weights are published, so there is no default model: what to give instead.
HOW_TO_GET_A_MODEL = (
    "no trained weights are published, so give one: 'ran demo' trains a small one into ran-demo/best "
    "in a few minutes, 'ran train ... --output-dir DIR' writes DIR/best, or a Hub id of a model you uploaded"
)

__all__ = ["HOW_TO_GET_A_MODEL"]
