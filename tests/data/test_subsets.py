"""The RAN authors' subset lists: parsing the real files, the pinned download (a local HTTP server stands
in for raw.githubusercontent.com), checksum refusal, cache, and the environment-variable override."""

from __future__ import annotations

import functools
import hashlib
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from reference_data import FERPLUS_DIR, LISTS_DIR, needs_reference_data

from ran.data.sources import subsets
from ran.data.sources.subsets import (
    AUTHORS_LISTS,
    FERPLUS_LABEL_FILES,
    fetch_ferplus_labels,
    load_subset_lists,
)

pytestmark = needs_reference_data


# (unique entries, repeated lines dropped), from RAN.md
EXPECTED = {
    "ferplus": {"occlusion": (605, 0), "pose30": (1_170, 0), "pose45": (633, 0), "minor": (1_170, 1)},
    "rafdb": {"occlusion": (734, 1), "pose30": (1_247, 0), "pose45": (558, 0)},
    "affectnet": {"occlusion": (683, 0), "pose30": (1_944, 5), "pose45": (983, 2)},
}


@pytest.mark.parametrize("dataset", sorted(EXPECTED))
def test_real_lists_parse(dataset):
    lists = load_subset_lists(dataset, LISTS_DIR)
    assert {name: (len(lst.entries), lst.duplicates) for name, lst in lists.items()} == EXPECTED[dataset]


def test_entries_keep_lines_and_extras():
    ferplus = load_subset_lists("ferplus", LISTS_DIR)
    first = ferplus["occlusion"].entries[0]  # '1_fer0034656.png 8 0' (CRLF)
    assert (first.key, first.label, first.line, dict(first.extras)) == (
        "fer0034656",
        1,
        1,
        {"occlusion_type": 0},
    )
    assert ferplus["pose30"].entries[0].key == "fer0032226"
    rafdb = load_subset_lists("rafdb", LISTS_DIR)
    assert rafdb["occlusion"].entries[0].key == "test_0003"
    assert {e.extras["occlusion_type"] for e in rafdb["occlusion"].entries} == {1, 2, 3, 4}
    affectnet = load_subset_lists("affectnet", LISTS_DIR)
    assert len(affectnet["pose45"].entries[0].key) == 56  # '7/<hash>/8.jpg' names the image by its hash


def test_recorded_checksums_match_the_shared_copies():
    for path, digest in AUTHORS_LISTS.sha256.items():
        assert hashlib.sha256((LISTS_DIR / path).read_bytes()).hexdigest() == digest
    for path, digest in FERPLUS_LABEL_FILES.sha256.items():
        assert hashlib.sha256((FERPLUS_DIR / path).read_bytes()).hexdigest() == digest


def test_rafdb_pose_label_file_must_agree(tmp_path):
    copy = tmp_path / "lists"
    shutil.copytree(LISTS_DIR, copy)
    label_file = copy / "RAF_DB_dir" / "val_raf_db_label_45.txt"
    lines = label_file.read_text().splitlines()
    lines[3] = "5" if lines[3] != "5" else "4"  # line 4 of the file, entry 3
    label_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"val_raf_db_label_45.txt line 4: label .* disagrees"):
        load_subset_lists("rafdb", copy)


@pytest.fixture
def served(tmp_path):
    """A tiny HTTP server on 127.0.0.1 serving a copy of the lists in the repository's layout."""
    root = tmp_path / "www"
    shutil.copytree(LISTS_DIR, root / "lists")
    for path in FERPLUS_LABEL_FILES.sha256:
        (root / "ferplus" / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FERPLUS_DIR / path, root / "ferplus" / path)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()
    server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass


def test_download_checks_and_caches(served, tmp_path, monkeypatch):
    root, url, server = served
    monkeypatch.delenv(subsets.SUBSET_LISTS_ENV, raising=False)
    monkeypatch.setenv(subsets.SUBSET_LISTS_URL_ENV, f"{url}/lists")
    monkeypatch.setenv(subsets.CACHE_DIR_ENV, str(tmp_path / "cache"))
    lists = load_subset_lists("ferplus")  # no directory, no env dir: the pinned download
    assert {name: len(lst.entries) for name, lst in lists.items()} == {
        "occlusion": 605,
        "pose30": 1170,
        "pose45": 633,
        "minor": 1170,  # val_ferplus_mn.txt at the repository's root: pose>30 plus one duplicate
    }
    cached = (
        tmp_path
        / "cache"
        / AUTHORS_LISTS.repo
        / AUTHORS_LISTS.commit
        / "FERplus_dir/pose_30_ferplus_list.txt"
    )
    assert cached.read_bytes() == (LISTS_DIR / "FERplus_dir/pose_30_ferplus_list.txt").read_bytes()
    # the cache answers once the server is gone
    server.shutdown()
    assert len(load_subset_lists("ferplus")["pose45"].entries) == 633


def test_download_refuses_a_changed_file(served, tmp_path):
    root, url, _ = served
    tampered = root / "lists" / "RAF_DB_dir" / "val_raf_db_list_45.txt"
    tampered.write_bytes(tampered.read_bytes().replace(b"0/test_0004", b"1/test_0004", 1))
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="sha256 .* differs from the recorded .*refusing"):
        load_subset_lists("rafdb", base_url=f"{url}/lists", cache_dir=cache)
    assert not (cache / "RAF_DB_dir" / "val_raf_db_list_45.txt").exists()
    # a corrupted cache entry is fetched again rather than trusted
    good = load_subset_lists("affectnet", base_url=f"{url}/lists", cache_dir=cache)
    assert len(good["occlusion"].entries) == 683
    (cache / "AffectNet_dir" / "occlusion_affectnet_list.txt").write_text("val/0/abc/\n")
    assert (
        len(load_subset_lists("affectnet", base_url=f"{url}/lists", cache_dir=cache)["occlusion"].entries)
        == 683
    )


def test_download_failure_is_a_clear_error(tmp_path):
    with pytest.raises(subsets.DownloadError, match="could not download http://127.0.0.1:9/"):
        load_subset_lists("ferplus", base_url="http://127.0.0.1:9", cache_dir=tmp_path)


def test_env_directory_and_disabled(monkeypatch, tmp_path):
    monkeypatch.setenv(subsets.SUBSET_LISTS_ENV, str(LISTS_DIR))
    monkeypatch.setenv(subsets.SUBSET_LISTS_URL_ENV, "http://127.0.0.1:9")  # would fail if used
    assert len(load_subset_lists("rafdb")["pose30"].entries) == 1_247
    assert load_subset_lists("rafdb", False) == {}
    with pytest.raises(FileNotFoundError, match="has no FERplus_dir/jianfei_occlusion_list.txt"):
        load_subset_lists("ferplus", tmp_path)


def test_ferplus_label_download(served, tmp_path):
    _, url, _ = served
    folder = fetch_ferplus_labels(base_url=f"{url}/ferplus", cache_dir=tmp_path / "labels")
    assert (folder / "data" / "FER2013Test" / "label.csv").read_bytes() == (
        FERPLUS_DIR / "data" / "FER2013Test" / "label.csv"
    ).read_bytes()
    from ran.data.sources.ferplus import ferplus_targets, load_ferplus_votes

    kind, tables = load_ferplus_votes(folder)
    assert kind == "label_csv"
    assert int(ferplus_targets(tables["test"][0].votes, "majority")[0].sum()) == 3_137
