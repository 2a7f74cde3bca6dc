"""Compute threads wait passively unless the user chose otherwise (ran.threads)."""

import os
import subprocess
import sys

import pytest


def _policy_seen_by_torch(env: dict[str, str]) -> str:
    code = "import os, ran, torch; print(os.environ.get('OMP_WAIT_POLICY'))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_import_ran_makes_threads_wait_passively_unless_the_user_chose():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _policy_seen_by_torch(env) == "PASSIVE"
    assert _policy_seen_by_torch({**env, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"


def test_default_threads_are_the_physical_cores_this_process_may_use(tmp_path, monkeypatch):
    from ran import threads

    # 4 CPUs allowed: two cores with two hyper-threads each
    for cpu in range(4):
        topology = tmp_path / "cpu" / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        topology.joinpath("core_cpus_list").write_text(f"{cpu // 2 * 2}-{cpu // 2 * 2 + 1}\n")
    quota = tmp_path / "cpu.max"
    monkeypatch.setattr(threads, "CPU_TOPOLOGY", tmp_path / "cpu")
    monkeypatch.setattr(threads, "CPU_QUOTA", quota)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    quota.write_text("max 100000\n")
    assert threads.default_threads() == 2 and threads.available_cpus() == 4
    quota.write_text("100000 100000\n")  # a container allowed one CPU's time
    assert threads.default_threads() == 1 and threads.available_cpus() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's (or a launcher's) choice is kept
    assert threads.default_threads() == 3
    assert "default: 3" in threads.threads_help()


def test_threads_reach_torch_whether_it_is_imported_before_or_after():
    code = (
        "from ran.threads import use_threads\n"
        "use_threads(1)\n"
        "import torch\n"
        "before = torch.get_num_threads()\n"
        "use_threads(2)\n"
        "print(before, torch.get_num_threads())"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["1", "2"]


def test_the_compute_commands_take_threads(tmp_path, capsys):
    import timm
    import torch
    from PIL import Image

    import ran
    from ran.cli import main

    model = timm.create_model("ran", backbone="test_resnet", region_size=32)
    folder = ran.save_pretrained(model, tmp_path / "model")
    Image.new("RGB", (48, 48), (120, 90, 60)).save(tmp_path / "face.png")
    was = torch.get_num_threads()
    try:
        argv = [str(tmp_path / "face.png"), "--model", str(folder), "--no-detect", "--no-progress"]
        assert main(["predict", *argv, "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(was)
    for command in ("train", "evaluate", "compare", "predict", "demo", "app"):
        with pytest.raises(SystemExit):
            main([command, "--threads", "0"])  # refused while the flags are parsed
        assert "argument --threads: expected an integer in [1, 1024], got '0'" in capsys.readouterr().err
