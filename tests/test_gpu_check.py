"""The GPU check command runs in its dry mode (the same steps, tiny, on the CPU) so CI exercises it."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_step(tmp_path, capsys):
    report_path = tmp_path / "report.json"
    code = load_gpu_check().main(
        ["--dry-run", "--json", str(report_path), "--workdir", str(tmp_path / "work")]
    )
    printed = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    steps = {step["name"]: step for step in report["steps"]}
    assert code == 0, printed
    assert list(steps) == ["environment", "tests", "data", "train", "benchmark"]
    assert all(step["status"] == "ok" for step in steps.values()), printed
    assert steps["environment"]["summary"]["cuda_available"] is False  # the dry run hides CUDA
    assert steps["tests"]["summary"]["passed"] >= 1 and not steps["tests"]["summary"]["failed_tests"]
    assert steps["train"]["summary"]["images_per_s_wall"] > 0
    rows = steps["benchmark"]["summary"]
    for row in ("inference bf16", "train step bf16", "backbone floor bf16 (B*K crops)", "data loader"):
        assert rows[row]["images_per_s"] > 0
    assert rows["inference bf16"]["ran_over_floor_time"] > 0
    assert "GPU check (dry run on CPU)" in printed and "benchmark" in printed


def test_pytest_summary_reads_counts_and_failures():
    output = "FAILED tests/test_a.py::test_x - AssertionError\nERROR tests/test_b.py\n"
    summary = load_gpu_check().pytest_summary(output + "2 failed, 10 passed, 1 error in 3.2s")
    assert summary == {
        "failed": 2,
        "passed": 10,
        "error": 1,
        "failed_tests": ["tests/test_a.py::test_x", "tests/test_b.py"],
    }
