"""One command that checks a GPU machine from a clean checkout (issues 11 and 15).

    RAN_PYTHON=/path/to/venv/bin/python python3 benchmarks/gpu_check.py [--dry-run] [--json report.json]

What it needs: a Python environment with this package's dependencies and its test extra (torch with CUDA,
torchvision, timm, transformers, datasets, accelerate, onnx, onnxruntime, pytest, pytest-timeout, ...:
``pip install -e '.[test]'`` or ``bash scripts/setup.sh`` where PyPI is reachable). The GPU machine has no
internet, so bring that environment and name its interpreter with ``RAN_PYTHON`` (or its folder with
``RAN_VENV``); default: the Python running this script. The tests also read ``../shared`` (the FERPlus
label files); tests that need it fail without it and are reported like any other failure.

Steps, each a subprocess with its own time limit; a failed step is reported and the next one still runs:

  1. environment: Python, torch, CUDA, the GPU and whether it has bf16;
  2. tests: the test suite (``-m "not slow"``) with CUDA visible;
  3. data: ``ran data synthetic`` (synthetic 48 px faces, nothing downloaded);
  4. train: ``ran train`` for one epoch in bf16; images/s from the wall time (start-up and validation
     included, so a lower bound);
  5. benchmark: ``benchmarks/bench_gpu.py``: training and inference images/s in bf16 with and without
     ``torch.compile``, RAN over its backbone floor, and the data loader's images/s.

Sized to finish in about 6 minutes on one GPU. ``--dry-run`` (automatic when CUDA is not usable) runs the
same steps tiny on the CPU, with CUDA hidden, in well under a minute: the test suite's CI runs it.
The report is printed compactly and, with ``--json PATH``, written as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (GPU, dry run) sizes of every step
SIZES = {
    "gpu": {
        "pytest": ["-m", "not slow", "--timeout", "300"],
        "tests_limit": 300,
        "train_size": 4096,
        "test_size": 256,
        "train": ["--model", "ran_resnet18", "--batch-size", "128", "--num-workers", "8"],
        "bench": ["--batch", "128", "--steps", "20", "--workers", "8"],
        "limit": 420,
    },
    "dry": {
        "pytest": ["tests/test_model.py", "-k", "bf16_model_crops and 24", "-n", "0"],
        "tests_limit": 300,
        "train_size": 48,
        "test_size": 16,
        "train": [
            *("--model", "ran", "--backbone", "test_resnet", "--region-size", "32"),
            *("--batch-size", "16", "--num-workers", "0"),
        ],
        "bench": [
            *("--model", "ran", "--backbone", "test_resnet", "--region-size", "32"),
            *("--batch", "8", "--steps", "2", "--workers", "0", "--no-compile", "--device", "cpu"),
        ],
        "limit": 300,
    },
}

ENVIRONMENT = """
import json, platform, torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "cpus": __import__("os").cpu_count()}
if torch.cuda.is_available():
    info.update(gpu=torch.cuda.get_device_name(0), gpus=torch.cuda.device_count(),
                bf16=torch.cuda.is_bf16_supported(), capability=list(torch.cuda.get_device_capability(0)))
print(json.dumps(info))
"""


@dataclass
class StepResult:
    name: str
    status: str  # ok / failed / timeout
    seconds: float
    summary: dict = field(default_factory=dict)
    tail: str = ""


def run_step(name: str, cmd: list[str], limit: float, env: dict[str, str]) -> tuple[StepResult, str]:
    """Run ``cmd`` from the repository root; never raises for a failing or hanging command."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit)
        output, status = proc.stdout + proc.stderr, "ok" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired as err:
        output = (err.stdout or b"").decode(errors="replace") + (err.stderr or b"").decode(errors="replace")
        status = "timeout"
    seconds = time.perf_counter() - start
    tail = "\n".join(output.strip().splitlines()[-15:]) if status != "ok" else ""
    return StepResult(name, status, round(seconds, 1), tail=tail), output


def pytest_summary(output: str) -> dict:
    """Counts from pytest's last line (``3 failed, 120 passed, 4 deselected in 80.1s``) and failed ids."""
    counts = {
        word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected)", output)
    }
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", output, flags=re.MULTILINE)
    return {**counts, "failed_tests": failed[:20]}


def check(args: argparse.Namespace, python: str, env: dict[str, str], work: Path) -> list[StepResult]:
    sizes = SIZES["dry" if args.dry_run else "gpu"]
    results = []

    step, output = run_step("environment", [python, "-c", ENVIRONMENT], 120, env)
    if step.status == "ok":
        step.summary = json.loads(output.strip().splitlines()[-1])
    results.append(step)

    if not args.skip_tests:
        cmd = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *sizes["pytest"]]
        step, output = run_step("tests", cmd, sizes["tests_limit"], env)
        step.summary = pytest_summary(output)
        results.append(step)

    data = work / "synthetic"
    cmd = [python, "-m", "ran", "data", "synthetic", "--out", str(data), "--overwrite"]
    cmd += ["--train-size", str(sizes["train_size"]), "--test-size", str(sizes["test_size"])]
    step, _ = run_step("data", cmd, sizes["limit"], env)
    results.append(step)

    cmd = [
        python,
        "-m",
        "ran",
        "train",
        "--data",
        str(data),
        "--output-dir",
        str(work / "run"),
        "--overwrite",
    ]
    cmd += ["--epochs", "1", "--mixed-precision", "bf16", "--no-progress", *sizes["train"]]
    step, output = run_step("train", cmd, sizes["limit"], env)
    if step.status == "ok":
        step.summary = {"images_per_s_wall": round(sizes["train_size"] / step.seconds, 1)}
        reported = re.findall(r"([\d.]+)\s*(?:images|img)/s", output)
        if reported:
            step.summary["images_per_s_reported"] = float(reported[-1])
    results.append(step)

    bench_json = work / "bench_gpu.json"
    cmd = [python, str(ROOT / "benchmarks" / "bench_gpu.py"), "--data", str(data), "--json", str(bench_json)]
    step, _ = run_step("benchmark", cmd + sizes["bench"], sizes["limit"], env)
    if step.status == "ok":
        rows = json.loads(bench_json.read_text())["rows"]
        step.summary = {name: {k: round(v, 3) for k, v in row.items()} for name, row in rows.items()}
    results.append(step)
    return results


def print_report(results: list[StepResult], mode: str) -> None:
    print(f"GPU check ({mode}):")
    for step in results:
        print(f"  {step.name:<12} {step.status:<8} {step.seconds:7.1f} s")
        for key, value in step.summary.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            print(f"      {key}: {value}")
        if step.tail:
            print("      | " + step.tail.replace("\n", "\n      | "))


def cuda_usable(python: str) -> bool:
    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    try:
        return subprocess.run([python, "-c", probe], timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="the same steps, tiny, on the CPU")
    parser.add_argument("--skip-tests", action="store_true", help="leave out the test-suite step")
    parser.add_argument("--json", help="write the report to this JSON file")
    parser.add_argument("--workdir", help="folder for the synthetic data and the run (default: a temp dir)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    venv = os.environ.get("RAN_VENV")
    python = os.environ.get("RAN_PYTHON") or (str(Path(venv) / "bin" / "python") if venv else sys.executable)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    if not args.dry_run and not cuda_usable(python):
        print("CUDA is not usable with this Python: running the dry run on the CPU instead", file=sys.stderr)
        args.dry_run = True
    if args.dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""
    with tempfile.TemporaryDirectory(prefix="ran-gpu-check-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        results = check(args, python, env, work)
    mode = "dry run on CPU" if args.dry_run else "GPU"
    print_report(results, mode)
    if args.json:
        report = {"mode": mode, "python": python, "steps": [asdict(step) for step in results]}
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if all(step.status == "ok" for step in results) else 1


if __name__ == "__main__":
    sys.exit(main())
