"""Compute threads wait passively unless the user chose otherwise (ran.threads)."""

import os
import subprocess
import sys


def _policy_seen_by_torch(env: dict[str, str]) -> str:
    code = "import os, ran, torch; print(os.environ.get('OMP_WAIT_POLICY'))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_import_ran_makes_threads_wait_passively_unless_the_user_chose():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _policy_seen_by_torch(env) == "PASSIVE"
    assert _policy_seen_by_torch({**env, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
