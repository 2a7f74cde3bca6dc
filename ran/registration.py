"""``import ran`` registers the RAN models in timm, without importing torch or timm itself.

Registering means importing ``ran.models``, whose ``@register_model`` functions add the family to timm's
registry; that imports torch, torchvision and timm: seconds and most of a gigabyte that ``ran --help``, or
a script that only reads a results file, does not need. So the registration waits for timm:

* timm already imported: ``ran.models`` is imported at once;
* otherwise a finder placed first on ``sys.meta_path`` answers for ``timm``: it asks the other finders
  as usual and only wraps the loader they return, so that right after timm's own module has run,
  ``ran.models`` is imported, before that ``import timm`` returns. Then the finder takes itself off
  ``sys.meta_path`` and timm gets its own loader back: nothing else about the import changes. A mere
  look-up (``importlib.util.find_spec('timm')``, as transformers does to see whether timm is installed)
  loads nothing, so the finder stays for the real import.

Either way, once ``import ran`` and ``import timm`` have both run, in any order,
``timm.create_model('ran_resnet18')``, ``timm.list_models('ran_*')`` and a Hub repository whose config
names a RAN work as before. An error in ``ran.models`` surfaces at ``import timm``, not later as an
unknown model.
"""

from __future__ import annotations

import importlib
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

TIMM = "timm"
MODELS = "ran.models"


def register_models() -> None:
    """Import ``ran.models`` (registering the RAN family in timm), unless an import of it is under way
    (timm imported from inside ``ran.models``: that import finishes the registration)."""
    if MODELS not in sys.modules:
        importlib.import_module(MODELS)


class _RegisterAfter:
    """timm's own loader, followed by :func:`register_models`; every other attribute is the loader's."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _AfterTimm)]
        register_models()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


class _AfterTimm:
    """A ``sys.meta_path`` finder that answers only for ``timm``, until timm is loaded."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if name != TIMM:
            return None
        for finder in [f for f in sys.meta_path if not isinstance(f, _AfterTimm)]:  # the others' answer
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _RegisterAfter(spec.loader)
                return spec
        return None


def register_in_timm() -> None:
    """Register the RAN models in timm now if timm is imported, else right after it is."""
    if TIMM in sys.modules:
        register_models()
    elif not any(isinstance(finder, _AfterTimm) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterTimm())


__all__ = ["register_in_timm", "register_models"]
