"""Files fetched from public repositories at a pinned commit, each checked against its recorded sha256.

The RAN authors' subset lists and the FERPlus label files are the paper's evaluation protocol, so they are
read byte-for-byte as of a fixed commit; a changed file is refused rather than silently giving other
numbers. Downloads are cached (``$RAN_CACHE_DIR``, else ``~/.cache/ran``) and written atomically.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ran.errors import UserError, one_line
from ran.files import write_bytes

SUBSET_LISTS_ENV = "RAN_SUBSET_LISTS"  # a local directory holding the lists (the repository's layout)
SUBSET_LISTS_URL_ENV = "RAN_SUBSET_LISTS_URL"  # overrides the raw-file base URL (mirrors, tests)
FERPLUS_URL_ENV = "RAN_FERPLUS_URL"
CACHE_DIR_ENV = "RAN_CACHE_DIR"


@dataclass(frozen=True)
class PinnedRepository:
    """Raw files of one GitHub repository at one commit, each with its recorded sha256."""

    repo: str
    commit: str
    url_env: str
    sha256: Mapping[str, str]
    local_hint: str  # how to give a local copy instead, for the message when a download fails

    @property
    def default_base_url(self) -> str:
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}"

    def base_url(self, override: str | None = None) -> str:
        return (override or os.environ.get(self.url_env) or self.default_base_url).rstrip("/")

    def cache_root(self, cache_dir: str | Path | None = None) -> Path:
        return Path(cache_dir) if cache_dir is not None else default_cache_dir() / self.repo / self.commit

    def fetch(self, path: str, *, base_url: str | None = None, cache_dir: str | Path | None = None) -> Path:
        """Local path of ``path``: from the cache if its checksum holds, else downloaded and checked."""
        if path not in self.sha256:
            raise KeyError(f"{path} is not one of the pinned files of {self.repo}")
        expected = self.sha256[path]
        target = self.cache_root(cache_dir) / path
        if target.is_file() and _sha256(target.read_bytes()) == expected:
            return target
        url = f"{self.base_url(base_url)}/{urllib.parse.quote(path)}"
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                payload = response.read()
        except (urllib.error.URLError, OSError) as err:
            raise DownloadError(
                f"could not download {url} ({one_line(err, 120)}); give a local copy of the repository's "
                f"files instead ({self.local_hint})"
            ) from err
        actual = _sha256(payload)
        if actual != expected:
            raise UserError(
                f"{url}: sha256 {actual} differs from the recorded {expected} "
                f"({self.repo}@{self.commit[:12]}); refusing the file"
            )
        return write_bytes(target, payload)

    def fetch_all(self, *, base_url: str | None = None, cache_dir: str | Path | None = None) -> Path:
        """Fetch every pinned file; returns the directory holding them in the repository's layout."""
        for path in self.sha256:
            self.fetch(path, base_url=base_url, cache_dir=cache_dir)
        return self.cache_root(cache_dir)


class DownloadError(UserError):
    """A pinned file could not be fetched (no network, wrong URL): one line saying what to give instead."""


def default_cache_dir() -> Path:
    """``$RAN_CACHE_DIR``, else ``$XDG_CACHE_HOME/ran`` (``~/.cache/ran``)."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "ran"


def _sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _checksums(listing: str) -> dict[str, str]:
    """``sha256sum`` output (``<hex>  <path>`` per line) as {path: hex}."""
    return {path: digest for digest, path in (line.split() for line in listing.strip().splitlines())}


AUTHORS_LISTS = PinnedRepository(
    repo="kaiwang960112/Challenge-condition-FER-dataset",
    commit="e43d7a06e696f3f87feb3cbced739a286bc08679",
    url_env=SUBSET_LISTS_URL_ENV,
    local_hint=f"--lists DIR or ${SUBSET_LISTS_ENV}, or --lists none to build without the subsets",
    sha256=_checksums(
        """
b9d5c500fe762b1cda4c9fb537e4560fff9d01acabdcebedd57290a9b2f9d903  FERplus_dir/jianfei_occlusion_list.txt
f744e57c115834069ba0ad61c8f81ab578c91514274fa4c79a2ed83691457371  FERplus_dir/pose_30_ferplus_list.txt
89bc5b7bc7243102d05a5d939183ebabb673b1b0fc35f519976bb7686d7877e5  FERplus_dir/pose_45_ferplus_list.txt
02a9b2279251fc0701825f37f688d9391c9c09c5db1b640ca43602386437f475  RAF_DB_dir/rafdb_occlusion_list.txt
ef0329b7954697b362f3c2d4242bde83ab2b8712b43eb3ccd4496ec265cf68f5  RAF_DB_dir/val_raf_db_list.txt
268e3d4cf82b807b0f5600989ca9b6e36e3abaf78b0c655d293c86e80ffd5dbb  RAF_DB_dir/val_raf_db_label.txt
371758f6eaa8257b5925edd24f6838a529a2e07fa9bb72e2c3bf92d9b984e86f  RAF_DB_dir/val_raf_db_list_45.txt
debcc16939a320475c999d7af78a7f1950c603f8ed429cdf250340871f073097  RAF_DB_dir/val_raf_db_label_45.txt
bba97c5965d59de0bf759beefadeeac5304227b765408d335dbdba8bc487e823  AffectNet_dir/occlusion_affectnet_list.txt
e5a7da60c39f122f3bdc4a936ff264dc936bee275c7928281fec1d8418770925  AffectNet_dir/pose_30_affectnet_list.txt
7774d9b6654da83514398f0d6e616e27e53e2e8360d87ffaf67f55e3f4e042cc  AffectNet_dir/pose_45_affectnet_list.txt
04801b63aaa2e720ea8e299e4d0d656566da1e13c0fa2481bc943664961fed00  val_ferplus_mn.txt
"""
    ),
)

FERPLUS_LABEL_FILES = PinnedRepository(
    repo="microsoft/FERPlus",
    commit="ae2128abf776409c93e50cf7c9d87180673314e6",
    url_env=FERPLUS_URL_ENV,
    local_hint="--labels DIR: a clone of microsoft/FERPlus or its FER2013* label folders",
    sha256=_checksums(
        """
9206e20d62f56475939f516847d61753e4860caeac9718b560129541b776fc2c  fer2013new.csv
a82c40c825505cd30e139195c246bc38f8ac39de0e8968cbf15e1dab7837658c  data/FER2013Train/label.csv
aad6298bed23cad816550362c2c00ae49b99513c7cae7d49651f347afd9ab860  data/FER2013Valid/label.csv
425142295cc23872651271be9f45a99dac11af426f948d1b60967c8845b7bdf2  data/FER2013Test/label.csv
"""
    ),
)


def fetch_ferplus_labels(*, base_url: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """The FERPlus label files (fer2013new.csv, data/FER2013*/label.csv) at the pinned commit, cached."""
    return FERPLUS_LABEL_FILES.fetch_all(base_url=base_url, cache_dir=cache_dir)
