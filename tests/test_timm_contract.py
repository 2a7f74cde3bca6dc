"""timm's own model tests (tests/test_models.py of the installed timm release) on every ran_* model.

scripts/setup.sh unpacks that file from timm's source distribution into .cache/timm-tests/<version>/.
The light models run in the default suite; the big backbones are marked slow (CI runs them too).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm

ROOT = Path(__file__).resolve().parents[1]
TIMM_TESTS = ROOT / ".cache" / "timm-tests" / timm.__version__ / "tests" / "test_models.py"

FAST = ["ran_resnet18", "ran_iresnet18", "iresnet18"]
SLOW = [
    "ran_resnet34",
    "ran_resnet50",
    "ran_resnet101",
    "ran_iresnet34",
    "ran_iresnet50",
    "ran_iresnet100",
    "ran_vgg16",
    "iresnet34",
    "iresnet50",
    "iresnet100",
]


# With the large backbones too, two runs at once (one thread each) share the two cores of CI: as many
# seconds of tests in each (timm's test durations, measured).
HALVES = [
    [
        "ran_vgg16",
        "ran_resnet101",
        "ran_resnet50",
        "iresnet100",
        "ran_iresnet34",
        "iresnet50",
        "ran_resnet18",
    ],
    ["ran_iresnet100", "ran_iresnet50", "ran_resnet34", "iresnet34", "ran_iresnet18", "iresnet18"],
]


def keyword(names: list[str]) -> str:
    """A ``-k`` expression for the tests of exactly ``names`` (``iresnet18`` without ``ran_iresnet18``)."""
    return " or ".join(name if name.startswith("ran_") else f"({name} and not ran_{name})" for name in names)


def start_timm_tests(names: list[str], env: dict[str, str]) -> subprocess.Popen:
    """timm's model tests on ``names``, started; each test's outcome on its own line of stdout."""
    if not TIMM_TESTS.is_file():
        pytest.fail(f"{TIMM_TESTS} is missing: run scripts/setup.sh (it fetches timm's source distribution)")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(TIMM_TESTS),
        "-p",
        "ran",
        "-k",
        keyword(names),
        "-v",
        "-p",
        "no:cacheprovider",
        "-W",
        "ignore",
        "--timeout",
        "900",
    ]
    env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        cmd, cwd=TIMM_TESTS.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture(scope="module")
def timm_runs(request) -> list[subprocess.CompletedProcess]:
    """timm's tests for the fast models, and for the large backbones too where this session runs their
    test: one collection of timm's 18,000 tests for the fast models, two runs at once for all."""
    if "test_timm_model_tests_large_backbones" in {item.name for item in request.session.items}:
        assert sorted(sum(HALVES, [])) == sorted(FAST + SLOW)
        started = [start_timm_tests(names, {"OMP_NUM_THREADS": "1"}) for names in HALVES]
    else:
        started = [start_timm_tests(FAST, {})]
    outputs = [p.communicate() for p in started]
    return [subprocess.CompletedProcess(p.args, p.returncode, *out) for p, out in zip(started, outputs)]


def assert_timm_tests_pass(runs: list[subprocess.CompletedProcess], names: list[str]) -> None:
    outcomes = []
    for done in runs:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        assert done.returncode in (0, 1), f"timm's model tests did not run:\n{tail}"  # 1: some test failed
        assert " passed" in tail, tail
        outcomes += [line for line in done.stdout.splitlines() if f"{TIMM_TESTS.name}::" in line]
    for name in names:
        # every requested name really ran (the -k keyword must not have matched nothing), and passed
        mine = [line for line in outcomes if f"-{name}]" in line]
        assert mine, f"no timm test collected for {name}"
        failed = [line for line in mine if "FAILED" in line or "ERROR" in line]
        assert not failed, f"timm's model tests failed for {name}:\n" + "\n".join(failed)


def test_timm_model_tests_fast_models(timm_runs):
    assert_timm_tests_pass(timm_runs, FAST)


@pytest.mark.slow
def test_timm_model_tests_large_backbones(timm_runs):
    assert_timm_tests_pass(timm_runs, SLOW)
