"""The data-backed tests wherever the repository is cloned: beside ../shared they run (none skipped); in a
folder without it they use the package's own pinned download (served here by a local HTTP server standing
in for GitHub) or, offline, are skipped with one reason that says how to provide the data."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from reference_data import ENV, SHARED_DATA, reference_data, shared_beside_checkout

REPO = Path(__file__).resolve().parents[1]
DATA_TESTS = [
    "tests/data/test_subsets.py",
    "tests/data/test_ferplus.py",
    "tests/data/test_rafdb_affectnet.py",
]
# with the download served: the tests that read the files themselves (not the full FERPlus image builds)
SERVED_TESTS = [
    "tests/data/test_subsets.py",
    "tests/data/test_ferplus.py::test_label_csv_counts_per_mode",
    "tests/data/test_ferplus.py::test_fer2013new_majority_counts",
    "tests/data/test_rafdb_affectnet.py",
]


def test_beside_shared_the_tests_use_it():
    if not shared_beside_checkout():
        pytest.skip(f"{SHARED_DATA} is not beside this checkout")
    if os.environ.get(ENV):
        pytest.skip(f"${ENV} chooses the data for this run")
    data = reference_data()
    assert data.available and data.ferplus == SHARED_DATA / "ferplus"
    assert data.lists == SHARED_DATA / "challenge-condition-fer"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def clone_without_shared(tmp_path) -> Path:
    """The package and its tests copied into a folder that has no ../shared beside it."""
    clone = tmp_path / "somewhere" / "ran"
    for part in ("ran", "tests", "pyproject.toml"):
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, clone / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, clone / part)
    return clone


def _start_pytest(clone: Path, tmp: Path, tests: list[str], **env: str) -> subprocess.Popen:
    """``pytest TESTS`` in ``clone``, started, with its own download cache and temporary folder under
    ``tmp`` (runs started together share nothing)."""
    tmp.mkdir(parents=True)
    environment = {k: v for k, v in os.environ.items() if k != ENV}
    environment.update(PYTHONPATH=str(clone), RAN_CACHE_DIR=str(tmp / "cache"), **env)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp / "t")]
    command += ["-n", "0"]  # one process each: the two runs started together already share the cores
    out = subprocess.PIPE
    return subprocess.Popen([*command, *tests], cwd=clone, env=environment, stdout=out, stderr=out, text=True)


def _finished(run: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = run.communicate(timeout=600)
    return subprocess.CompletedProcess(run.args, run.returncode, stdout, stderr)


@pytest.mark.slow
@pytest.mark.reference_data
def test_a_clone_elsewhere_downloads_or_skips(clone_without_shared, tmp_path):
    # The real files, served the way raw.githubusercontent.com serves them.
    www = tmp_path / "www"
    shutil.copytree(reference_data().ferplus, www / "ferplus")
    shutil.copytree(reference_data().lists, www / "lists")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    # Offline and served, at once (the two cores share them), each with its own cache.
    try:
        offline = _start_pytest(
            clone_without_shared,
            tmp_path / "offline",
            DATA_TESTS,
            RAN_FERPLUS_URL="http://127.0.0.1:9",
            RAN_SUBSET_LISTS_URL="http://127.0.0.1:9",
        )
        served = _start_pytest(
            clone_without_shared,
            tmp_path / "served",
            SERVED_TESTS,
            RAN_FERPLUS_URL=f"{url}/ferplus",
            RAN_SUBSET_LISTS_URL=f"{url}/lists",
        )
        offline, served = _finished(offline), _finished(served)
    finally:
        server.shutdown()
        server.server_close()
    assert offline.returncode == 0, offline.stdout[-2000:]
    assert offline.stdout.count("data-backed tests skipped: reference data not found") == 1
    assert "RAN_REFERENCE_DATA" in offline.stdout and " passed" in offline.stdout  # the others still ran
    assert not (tmp_path / "offline" / "cache" / "microsoft").exists()  # nothing came down

    assert served.returncode == 0, served.stdout[-3000:]
    assert "skipped" not in served.stdout and " passed" in served.stdout
    assert (tmp_path / "served" / "cache" / "microsoft" / "FERPlus").is_dir()  # through the pinned download


def test_the_skip_summary_counts_every_skipped_test():
    from types import SimpleNamespace

    from reference_data import skip_summary

    def skipped(reason: str) -> SimpleNamespace:
        return SimpleNamespace(longrepr=("tests/x.py", 1, f"Skipped: {reason}"))

    reports = [skipped("no data here")] * 3 + [skipped("no data here (download failed)"), skipped("no git")]
    lines = skip_summary(reports, "no data here")
    assert lines == ["4 data-backed tests skipped: no data here", "1 other test skipped: no git"]
    assert sum(int(line.split()[0]) for line in lines) == len(reports)
