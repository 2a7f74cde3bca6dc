"""Datasets for RAN as Parquet folders (FERPlus, RAF-DB, AffectNet, synthetic) and ``datasets`` objects.

Every builder writes the same features (``ran.data.format.folder.dataset_features``) so one training and
evaluation loop reads them all. The ``write_*`` builders stream into a folder (Parquet shards in row
groups, ``num_proc`` worker processes, bounded memory); the ``load_*`` forms return the same rows as an
in-memory DatasetDict. ``load_dataset_folder`` reads a folder back (``datasets.load_dataset`` does too),
``load_split_shards`` gives one process of a multi-node run its own shard files.

Subpackages: ``sources`` (where each dataset comes from), ``format`` (the folder on disk: written, checked,
read), ``synthetic`` (the generated dataset of ``ran demo``) and ``batches`` (the torch side: rows as
batches of faces, class-balanced sampling).
"""

from __future__ import annotations

from typing import Any

from ran.data.batches.sampling import class_balanced_weights
from ran.data.format.folder import (
    check_dataset_folder,
    dataset_features,
    load_dataset_folder,
    load_split_shards,
    push_dataset_folder,
    split_files,
)
from ran.data.format.writer import write_dataset_folder
from ran.data.sources.affectnet import load_affectnet, write_affectnet
from ran.data.sources.ferplus import LABEL_MODES, ferplus_targets, load_ferplus, write_ferplus
from ran.data.sources.mapping import class_index_map, convert_labels, remap_dataset
from ran.data.sources.rafdb import load_rafdb, write_rafdb
from ran.data.sources.subsets import fetch_ferplus_labels, load_subset_lists

__all__ = [
    "LABEL_MODES",
    "build_synthetic",
    "check_dataset_folder",
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
    "load_split_shards",
    "load_subset_lists",
    "push_dataset_folder",
    "remap_dataset",
    "split_files",
    "write_affectnet",
    "write_dataset_folder",
    "write_ferplus",
    "write_rafdb",
    "write_synthetic",
]


def __getattr__(name: str) -> Any:
    # The synthetic generator lives in its own subpackage; import it only when asked for.
    if name in ("build_synthetic", "write_synthetic"):
        from ran.data import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module 'ran.data' has no attribute {name!r}")
