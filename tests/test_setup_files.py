"""What a fresh clone shows before anything runs: a licence matching pyproject, examples that fit the
machine, a set-up script that says what it does and how much it takes."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def test_the_licence_file_is_the_one_pyproject_declares():
    declared = re.search(r'^license = \{ text = "(.+)" \}', (REPO / "pyproject.toml").read_text(), re.M)[1]
    text = (REPO / "LICENSE").read_text()
    assert declared == "MIT" and text.startswith("MIT License") and "the ran authors" in text


@pytest.mark.parametrize("example", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_ask_for_no_more_workers_than_this_machine_has(example):
    workers = (yaml.safe_load(example.read_text()).get("data") or {}).get("num_workers")
    assert workers is None or workers <= (os.cpu_count() or 1), f"{example.name}: num_workers {workers}"


def test_setup_says_its_steps_size_and_time(tmp_path):
    script = (REPO / "scripts" / "setup.sh").read_text()
    assert re.search(r"\d+ GB", script) and re.search(r"\d+(-\d+)? minutes", script)
    readme = (REPO / "README.md").read_text()
    assert re.search(r"about \d+ GB", readme) and "minutes" in readme
    # the steps: run with pip and python stubbed out, it prints them in order and installs nothing
    fake = tmp_path / "repo"
    (fake / "scripts").mkdir(parents=True)
    (fake / "scripts" / "setup.sh").write_text(script)
    venv_bin = fake / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").write_text('#!/bin/sh\n[ "$1" = -c ] && echo 1.0.0; exit 0\n')
    (venv_bin / "python").chmod(0o755)
    timm_tests = fake / ".cache" / "timm-tests" / "1.0.0" / "tests"
    timm_tests.mkdir(parents=True)
    (timm_tests / "test_models.py").write_text("")
    done = subprocess.run(["bash", str(fake / "scripts" / "setup.sh")], capture_output=True, text=True)
    steps = re.findall(r"^setup: (\d)/4", done.stderr, flags=re.M)
    assert done.returncode == 0 and steps == ["2", "3", "4"], done.stderr
