"""Package attributes imported on first use (PEP 562).

A package's ``__init__`` that imports its modules eagerly makes every import of one of them pay for all:
``ran train --help`` only needs the option dataclasses of ``ran.training.config``, but ``ran.training``
would import the training loop, and with it torch (seconds). A package whose ``__init__`` sets
``__getattr__ = lazy_attributes(__name__, {...})`` keeps offering the same names (``from ran.training
import train``) and imports each one's module only when it is first asked for.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from typing import Any


def lazy_attributes(package: str, homes: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``homes`` maps a public name to the module defining it.
    A name that is not in ``homes`` but is a submodule of ``package`` (``ran.data.batches``) is imported
    too, as an eager ``__init__`` made it available before."""

    def __getattr__(name: str) -> Any:
        if name in homes:
            value = getattr(importlib.import_module(homes[name]), name)
        elif not name.startswith("__") and importlib.util.find_spec(f"{package}.{name}") is not None:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)  # asked once: later lookups do not come here
        return value

    return __getattr__


__all__ = ["lazy_attributes"]
