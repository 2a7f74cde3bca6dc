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


def run_timm_tests(names: list[str]) -> None:
    if not TIMM_TESTS.is_file():
        pytest.fail(f"{TIMM_TESTS} is missing: run scripts/setup.sh (it fetches timm's source distribution)")
    keyword = " or ".join(names)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(TIMM_TESTS),
        "-p",
        "ran",
        "-k",
        keyword,
        "-q",
        "-p",
        "no:cacheprovider",
        "-W",
        "ignore",
        "--timeout",
        "900",
        "-x",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=TIMM_TESTS.parent, env=env, capture_output=True, text=True)
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
    assert proc.returncode == 0, f"timm's model tests failed for {names}:\n{tail}"
    assert " passed" in tail and "failed" not in tail, tail
    # every requested name really ran (the -k keyword must not have matched nothing)
    collected = subprocess.run(
        cmd[:-1] + ["--collect-only"], cwd=TIMM_TESTS.parent, env=env, capture_output=True, text=True
    ).stdout
    for name in names:
        assert f"-{name}]" in collected, f"no timm test collected for {name}"


def test_timm_model_tests_fast_models():
    run_timm_tests(FAST)


@pytest.mark.slow
def test_timm_model_tests_large_backbones():
    run_timm_tests(SLOW)
