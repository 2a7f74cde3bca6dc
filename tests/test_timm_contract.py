"""timm's own model tests (tests/test_models.py of the installed timm release) on every ran_* model.

scripts/setup.sh unpacks that file from timm's source distribution into .cache/timm-tests/<version>/.
The light models run in the default suite; the big backbones are marked slow (CI runs them too). Every
timm test runs on one model of each kind of backbone (basic and bottleneck ResNet blocks, IResNet, VGG);
the deeper variants of a kind, whose RAN code and backbone code are the same with more layers, run the
tests of the model contract (default_cfgs, forward_features): the full set on them took 155 of the 248 s
of timm's tests on a 2-core AVX2 EPYC. VGG16 runs every test but the two backward ones (86 of its 135 s
there: twelve VGG16 passes over 224 px regions, backward, on one thread); RAN's backward is the same code
over any backbone and runs on the other models here.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm

ROOT = Path(__file__).resolve().parents[1]
TIMM_TESTS = ROOT / ".cache" / "timm-tests" / timm.__version__ / "tests" / "test_models.py"

FAST = ["ran_resnet18", "ran_iresnet18", "iresnet18"]
SLOW_ALL_TESTS = ["ran_resnet50"]
SLOW_NO_BACKWARD = ["ran_vgg16"]
SLOW_CONTRACT = [
    "ran_resnet34",
    "ran_resnet101",
    "ran_iresnet34",
    "ran_iresnet50",
    "ran_iresnet100",
    "iresnet34",
    "iresnet50",
    "iresnet100",
]
SLOW = SLOW_ALL_TESTS + SLOW_NO_BACKWARD + SLOW_CONTRACT
CONTRACT_TESTS = "(test_model_default_cfgs or test_model_forward_features)"
BACKWARD_TESTS = {"test_model_backward", "test_model_backward_fx"}


def keyword(names: list[str], contract_only: list[str] = (), no_backward: list[str] = ()) -> str:
    """A ``-k`` expression for every test of ``names``, the contract tests of ``contract_only`` and all
    but the backward tests of ``no_backward`` (``iresnet18`` without ``ran_iresnet18``)."""

    def either(group: list[str]) -> str:
        return " or ".join(n if n.startswith("ran_") else f"({n} and not ran_{n})" for n in group)

    parts = [either(names)] if names else []
    if contract_only:
        parts.append(f"(({either(list(contract_only))}) and {CONTRACT_TESTS})")
    if no_backward:
        parts.append(f"(({either(list(no_backward))}) and not test_model_backward)")
    return " or ".join(parts)


# With the large backbones too, two runs at once (one thread each) share the two cores of CI, with about
# as many seconds of tests in each (timm's test durations on one thread, measured on a 2-core AVX2 EPYC):
# VGG16's tests (41 s) and the deeper variants' contract tests (24 s); the fast models (40 s) and
# ResNet-50's full set (33 s). (names, contract_only, no_backward) per run.
HALVES = [([], SLOW_CONTRACT, SLOW_NO_BACKWARD), (FAST + SLOW_ALL_TESTS, [], [])]


def start_timm_tests(
    names: list[str], env: dict[str, str], contract_only: list[str] = (), no_backward: list[str] = ()
) -> subprocess.Popen:
    """timm's model tests on ``names`` (the contract tests only on ``contract_only``, all but the backward
    tests on ``no_backward``), started; each test's outcome on its own line of stdout."""
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
        keyword(names, contract_only, no_backward),
        "-v",
        *("-n", "0"),  # our pyproject's addopts reach this run too; its two halves already run at once
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
        assert sorted(n for half in HALVES for group in half for n in group) == sorted(FAST + SLOW)
        one_thread = {"OMP_NUM_THREADS": "1"}
        started = [start_timm_tests(names, one_thread, *rest) for names, *rest in HALVES]
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
    ran = {}
    for done in timm_runs:
        for test, name in re.findall(r"::(test_\w+)\[[^\]]*?-([\w.]+)\] (?:PASSED|SKIPPED)", done.stdout):
            ran.setdefault(name, set()).add(test)
    for name in SLOW_CONTRACT:  # the contract tests, and only those
        assert ran[name] == {"test_model_default_cfgs", "test_model_forward_features"}, (name, ran[name])
    for name in SLOW_ALL_TESTS + FAST:
        assert BACKWARD_TESTS | {"test_model_forward_torchscript"} <= ran[name], (name, ran[name])
    for name in SLOW_NO_BACKWARD:
        assert "test_model_forward_torchscript" in ran[name] and not ran[name] & BACKWARD_TESTS, ran[name]
