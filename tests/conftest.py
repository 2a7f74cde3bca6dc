import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from reference_data import reference_data, shared_beside_checkout, skip_summary  # noqa: E402  (after the offline switches)


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto`` (pyproject's addopts): one worker per core, at most two. Each worker loads torch and runs
    it on every core, so more workers add memory and contention; two halve the time where subprocess and
    import waits leave cores idle (126 % of the CPU used by one process, 190 % by two)."""
    return max(1, min(os.cpu_count() or 1, 2))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Under pytest-xdist, a test marked ``alone`` (a time it asserts is a time on an idle machine) runs
    while the other workers wait between two of their tests; every other test runs beside any other."""
    workerinput = getattr(item.config, "workerinput", None)  # only on xdist's workers
    if workerinput is None:
        yield
        return
    shared = item.config._tmp_path_factory.getbasetemp().parent  # the workers' basetemps sit side by side
    with _turn(shared, alone=item.get_closest_marker("alone") is not None):
        yield


@contextlib.contextmanager
def _turn(folder, alone: bool):
    """A readers-writer lock over two files: every test holds ``run`` shared, an ``alone`` test holds it
    exclusively. Taking ``run`` means first passing ``gate``, which an ``alone`` test keeps closed while it
    waits and runs, so the other workers cannot keep it waiting by taking turns."""
    with open(folder / "ran-tests.gate", "a") as gate, open(folder / "ran-tests.run", "a") as run:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(run, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            if not alone:
                fcntl.flock(gate, fcntl.LOCK_UN)
        yield  # closing the files releases both


def pytest_report_header(config) -> str:
    data = reference_data()
    return f"reference data: {data.source}" if data.available else f"reference data: {data.missing_reason}"


def pytest_runtest_setup(item) -> None:
    if item.get_closest_marker("reference_data") and not reference_data().available:
        pytest.skip(reference_data().missing_reason)


def _skipped_for_data(terminalreporter) -> int:
    reason = reference_data().missing_reason
    reports = terminalreporter.stats.get("skipped", [])
    return sum(1 for r in reports if reason and isinstance(r.longrepr, tuple) and reason in r.longrepr[2])


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    if _skipped_for_data(terminalreporter):
        for line in skip_summary(skipped, reference_data().missing_reason):
            terminalreporter.write_line(line)


def pytest_sessionfinish(session, exitstatus) -> None:
    """Beside ../shared (CI), a run that skipped data-backed tests must not pass."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and shared_beside_checkout() and _skipped_for_data(reporter):
        reporter.write_line("error: ../shared holds the reference data, yet data-backed tests were skipped")
        session.exitstatus = 1


@pytest.fixture
def lock_held_by_another_process():
    """``hold(out, command, inside=...)``: OUT's lock, held by a live process (a sleeping child) as another
    ran command would hold it; returns the child, which is killed after the test."""
    from ran.locks import lock_path

    children = []

    def hold(out, command: str, *, inside: bool) -> subprocess.Popen:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        children.append(child)
        lock = lock_path(out, inside=inside)
        lock.parent.mkdir(parents=True, exist_ok=True)
        owner = {"pid": child.pid, "host": socket.gethostname(), "command": command, "started": "12:03:01"}
        lock.write_text(json.dumps(owner))
        return child

    yield hold
    for child in children:
        child.kill()
        child.wait()
