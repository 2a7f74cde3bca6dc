"""Which of the model's outputs answer which of the dataset's classes.

Classes are matched by name (``ran.data.sources.mapping.class_index_map``): a model trained on one dataset
can be
scored on another whose class order differs (AffectNet vs FERPlus) or whose class list differs (FERPlus 8
vs RAF-DB 7, no contempt). When the lists differ, scoring on the shared classes only is a choice the user
makes (``cross_dataset=True``, ``--cross-dataset``): the model's logits are restricted to the shared
classes, rows of classes the model does not know are left out, and the report names both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ran.data.sources.mapping import UNMAPPED, class_index_map
from ran.errors import UserError


@dataclass(frozen=True)
class ClassMatch:
    """The classes scored, in the dataset's order, with the model logit and data label of each."""

    names: tuple[str, ...]
    model_index: tuple[int, ...]
    data_index: tuple[int, ...]
    model_classes: tuple[str, ...]
    data_classes: tuple[str, ...]

    @property
    def dropped_from_model(self) -> list[str]:
        """Classes the model predicts that the data lacks (their logits are left out)."""
        return [name for name in self.model_classes if name not in self.names]

    @property
    def dropped_from_data(self) -> list[str]:
        """Classes of the data that the model does not predict (their rows are left out)."""
        return [name for name in self.data_classes if name not in self.names]

    @property
    def is_cross_dataset(self) -> bool:
        return bool(self.dropped_from_model or self.dropped_from_data)

    def label_lookup(self) -> list[int]:
        """For each data label index, its index among :attr:`names` (-1 for a dropped class)."""
        lookup = [UNMAPPED] * len(self.data_classes)
        for position, index in enumerate(self.data_index):
            lookup[index] = position
        return lookup

    def describe(self) -> dict[str, Any]:
        """What a report says about the classes (results.json ``classes`` entry)."""
        return {
            "evaluated": list(self.names),
            "dropped_from_model": self.dropped_from_model,
            "dropped_from_data": self.dropped_from_data,
        }


def _is_generic(names: Sequence[str]) -> bool:
    """``class_0`` ... ``class_N``: a model that does not know its class names."""
    return list(names) == [f"class_{i}" for i in range(len(names))]


def _listing(names: Sequence[str]) -> str:
    return f"{len(names)} ({', '.join(names)})"


def match_classes(
    model_classes: Sequence[str], data_classes: Sequence[str], *, cross_dataset: bool = False
) -> ClassMatch:
    """Match the model's classes to the data's by name (by position when the model has no names).

    The same names in another order are matched silently. Different lists are an error unless
    ``cross_dataset``, which scores the shared classes; no shared class at all is always an error.
    """
    model_classes, data_classes = tuple(model_classes), tuple(data_classes)
    if _is_generic(model_classes):
        if len(model_classes) != len(data_classes):
            raise UserError(
                f"num_classes mismatch: the model predicts {len(model_classes)} classes, the dataset has "
                f"{_listing(data_classes)}"
            )
        model_classes = data_classes  # no names recorded: the classes are the data's, in its order
    lookup = class_index_map(data_classes, model_classes)
    shared = [i for i, model_index in enumerate(lookup) if model_index != UNMAPPED]
    match = ClassMatch(
        names=tuple(data_classes[i] for i in shared),
        model_index=tuple(lookup[i] for i in shared),
        data_index=tuple(shared),
        model_classes=model_classes,
        data_classes=data_classes,
    )
    if not shared:
        raise UserError(
            f"no shared class: the model predicts {_listing(model_classes)}, the dataset has "
            f"{_listing(data_classes)}"
        )
    if match.is_cross_dataset and not cross_dataset:
        raise UserError(
            f"classes differ: the model predicts {_listing(model_classes)}, the dataset has "
            f"{_listing(data_classes)}; pass --cross-dataset (cross_dataset=True) to evaluate on the "
            f"{len(shared)} shared classes"
        )
    return match


__all__ = ["ClassMatch", "match_classes"]
