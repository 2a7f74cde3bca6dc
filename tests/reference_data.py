"""Where the data-backed tests find the reference data: the FERPlus label files and the RAN authors' lists.

Looked up once per session, in this order:

1. ``$RAN_REFERENCE_DATA``: a folder laid out like ``shared/data`` (``ferplus/`` with ``fer2013new.csv`` and
   ``data/FER2013*/label.csv``; ``challenge-condition-fer/`` with ``FERplus_dir/``, ``RAF_DB_dir/``,
   ``AffectNet_dir/``);
2. ``../shared/data`` beside the checkout (the project's machines and CI);
3. the package's own pinned download (microsoft/FERPlus and the authors' repository at recorded commits,
   sha256-checked) into the ran cache (``$RAN_CACHE_DIR``, default ``~/.cache/ran``); ``RAN_FERPLUS_URL``
   and ``RAN_SUBSET_LISTS_URL`` point it at a mirror;
4. otherwise the tests marked ``reference_data`` are skipped, with one reason that says how to provide it.
"""

from __future__ import annotations

import functools
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ENV = "RAN_REFERENCE_DATA"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
_MISSING = Path("/nonexistent/ran-reference-data")


@dataclass(frozen=True)
class ReferenceData:
    ferplus: Path  # fer2013new.csv, data/FER2013{Train,Valid,Test}/label.csv
    lists: Path  # FERplus_dir/, RAF_DB_dir/, AffectNet_dir/
    source: str  # where they came from, for the report header
    missing_reason: str | None = None

    @property
    def available(self) -> bool:
        return self.missing_reason is None


def _complete(ferplus: Path, lists: Path) -> bool:
    return (ferplus / "fer2013new.csv").is_file() and (lists / "FERplus_dir").is_dir()


def _download() -> ReferenceData:
    from ran.data.sources.subsets import AUTHORS_LISTS, DownloadError, fetch_ferplus_labels

    try:
        ferplus = fetch_ferplus_labels()
        lists = AUTHORS_LISTS.fetch_all()
    except (DownloadError, ValueError) as err:
        reason = (
            f"reference data not found: no ${ENV}, no {SHARED_DATA}, and the pinned download failed "
            f"({textwrap.shorten(str(err), 150)}). Set {ENV}=DIR (a folder with ferplus/ and "
            "challenge-condition-fer/), or run once with network access to fill the cache"
        )
        return ReferenceData(_MISSING, _MISSING, "none", reason)
    return ReferenceData(ferplus, lists, f"pinned download, cached in {ferplus.parents[2]}")


@functools.lru_cache(maxsize=1)
def reference_data() -> ReferenceData:
    """The reference data for this session (see the module docstring)."""
    given = os.environ.get(ENV)
    if given:
        root = Path(given).expanduser()
        if not _complete(root / "ferplus", root / "challenge-condition-fer"):
            reason = f"${ENV}={given} lacks ferplus/fer2013new.csv or challenge-condition-fer/FERplus_dir"
            return ReferenceData(_MISSING, _MISSING, "none", reason)
        return ReferenceData(root / "ferplus", root / "challenge-condition-fer", f"${ENV} ({root})")
    if _complete(SHARED_DATA / "ferplus", SHARED_DATA / "challenge-condition-fer"):
        return ReferenceData(
            SHARED_DATA / "ferplus", SHARED_DATA / "challenge-condition-fer", str(SHARED_DATA)
        )
    return _download()


def shared_beside_checkout() -> bool:
    """Whether ``../shared`` holds the data: then nothing may be skipped for want of it."""
    return _complete(SHARED_DATA / "ferplus", SHARED_DATA / "challenge-condition-fer")


def skip_summary(skipped: list, data_reason: str | None) -> list[str]:
    """The summary lines for the ``skipped`` test reports: how many were skipped for want of the reference
    data, then how many for each other reason, so the counts add up to pytest's own "N skipped"."""
    reasons: dict[str, int] = {}
    for report in skipped:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    data = sum(n for reason, n in reasons.items() if data_reason and data_reason in reason)
    lines = [f"{data} data-backed test{'s' * (data != 1)} skipped: {data_reason}"] if data else []
    for reason, n in reasons.items():
        if not (data_reason and data_reason in reason):
            lines.append(f"{n} other test{'s' * (n != 1)} skipped: {reason}")
    return lines


def skip_without_reference_data() -> None:
    """For fixtures built from the reference data: every test that uses them is skipped without it."""
    if not reference_data().available:
        pytest.skip(reference_data().missing_reason)


FERPLUS_DIR = reference_data().ferplus
LISTS_DIR = reference_data().lists
needs_reference_data = pytest.mark.reference_data
