"""Datasets for RAN as ``datasets.DatasetDict`` objects and Parquet folders (FERPlus, RAF-DB, AffectNet).

Every builder returns the same features (``ran.data.folder.dataset_features``) so one training and
evaluation loop reads them all; ``write_dataset_folder`` / ``load_dataset_folder`` store and reload them
in a form ``datasets.load_dataset`` and the Hugging Face Hub understand.
"""

from __future__ import annotations

from typing import Any

from ran.data.affectnet import load_affectnet
from ran.data.ferplus import LABEL_MODES, ferplus_targets, load_ferplus
from ran.data.folder import (
    check_dataset_folder,
    dataset_features,
    load_dataset_folder,
    push_dataset_folder,
    write_dataset_folder,
)
from ran.data.mapping import class_index_map, convert_labels, remap_dataset
from ran.data.rafdb import load_rafdb
from ran.data.sampling import class_balanced_sampler, class_balanced_weights
from ran.data.subsets import fetch_ferplus_labels, load_subset_lists

__all__ = [
    "LABEL_MODES",
    "build_synthetic",
    "check_dataset_folder",
    "class_balanced_sampler",
    "class_balanced_weights",
    "class_index_map",
    "convert_labels",
    "dataset_features",
    "fetch_ferplus_labels",
    "ferplus_targets",
    "load_affectnet",
    "load_dataset_folder",
    "load_ferplus",
    "load_rafdb",
    "load_subset_lists",
    "push_dataset_folder",
    "remap_dataset",
    "write_dataset_folder",
]


def __getattr__(name: str) -> Any:
    # The synthetic generator lives in its own module (another layer); import it only when asked for.
    if name == "build_synthetic":
        from ran.data.synthetic import build_synthetic

        return build_synthetic
    raise AttributeError(f"module 'ran.data' has no attribute {name!r}")
