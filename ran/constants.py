"""Values the command-line parsers need, in a module that imports nothing heavy.

``ran --help`` and ``ran <command> --help`` build their parsers before torch is imported (see
``ran_command``); a choice list or default a parser shows lives here, and the library modules that use it
take it from here too, so there is still one source for each value.
"""

from __future__ import annotations

# No trained RAN weights are published, so there is no default model: what to give instead.
HOW_TO_GET_A_MODEL = (
    "no trained weights are published, so give one: 'ran demo' trains a small one into ran-demo/best "
    "in a few minutes, 'ran train ... --output-dir DIR' writes DIR/best, or a Hub id of a model you uploaded"
)

__all__ = ["HOW_TO_GET_A_MODEL"]
