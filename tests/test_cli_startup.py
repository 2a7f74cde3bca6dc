"""The command line answers at once: ``ran --help`` and every ``ran <command> --help`` parse without
importing torch (or timm, datasets), while ``import ran`` still registers the RAN models in
timm, whichever of the two is imported first.

Each check needs a fresh interpreter. To keep the file quick, the helps run in children forked from one
interpreter that has imported ``ran.cli`` alone (each child starts where a fresh ``ran`` would), and the
interpreters that import torch start together, so two cores share them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ran.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
# transformers may load: its HfArgumentParser builds the dataclass commands' flags, without torch.
HEAVY = ("torch", "torchvision", "timm", "datasets", "gradio", "cv2")
FAMILY = [
    "ran_iresnet100",
    "ran_iresnet18",
    "ran_iresnet34",
    "ran_iresnet50",
    "ran_resnet101",
    "ran_resnet18",
    "ran_resnet34",
    "ran_resnet50",
    "ran_vgg16",
]


def pythons(codes: dict[str, str]) -> dict[str, str]:
    """Run each of ``codes`` in a fresh interpreter with this checkout first on the path, all at once;
    each one's stdout."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    started = {
        name: subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name, code in codes.items()
    }
    answers = {}
    for name, child in started.items():
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, f"{name}:\n{err}"
        answers[name] = out
    return answers


HELP = """
import contextlib, io, json, os, sys, traceback
from ran.cli import main


def answer(argv):
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown):
        try:
            code = main(argv)
        except SystemExit as done:
            code = done.code
    imported = sorted(m for m in HEAVY if m in sys.modules)
    return {"code": code, "help": shown.getvalue(), "imported": imported}


answers = {}
for argv in ARGVS:  # each in a child forked from this interpreter: it starts as a fresh `ran` would
    read, write = os.pipe()
    if os.fork() == 0:
        try:
            os.close(read)
            with os.fdopen(write, "w") as pipe:
                try:
                    json.dump(answer(argv), pipe)
                except Exception:
                    json.dump({"error": traceback.format_exc()}, pipe)
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        answers[" ".join(argv)] = json.load(pipe)
    os.waitpid(-1, 0)
print(json.dumps(answers))
"""
HELP_ARGVS = [["--help"], *([command, "--help"] for command in COMMANDS)]


@pytest.fixture(scope="module")
def helps() -> dict[str, dict]:
    """``ran [command] --help`` for every command: its exit code, what it printed, the heavy modules
    loaded by then."""
    code = HELP.replace("ARGVS", repr(HELP_ARGVS)).replace("HEAVY", repr(HEAVY))
    return json.loads(pythons({"helps": code})["helps"].splitlines()[-1])


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_imports_nothing_heavy(command, helps):
    answer = helps[f"{command} --help".strip()]
    assert "error" not in answer, answer["error"]
    assert answer["code"] == 0 and "usage: ran" in answer["help"]
    assert answer["imported"] == [], f"ran {command} --help imported {answer['imported']}"


REGISTERED = """
import json, sys
ORDER
print(json.dumps({
    "torch_after_import_ran": TORCH_AFTER_RAN,
    "family": sorted(timm.list_models("ran_*")),
    "built": type(timm.create_model("ran_resnet18")).__name__,
}))
"""
ORDERS = {
    "ran-then-timm": "import ran\nTORCH_AFTER_RAN = 'torch' in sys.modules\nimport timm",
    "timm-then-ran": "import timm\nimport ran\nTORCH_AFTER_RAN = False",
    "ran-then-timm-submodule": "import ran\nTORCH_AFTER_RAN = 'torch' in sys.modules\n"
    "from timm.models import resnet\nimport timm",
    # transformers looks timm up (find_spec) without loading it; the real import still registers
    "timm-looked-up-before-import": "import ran\nTORCH_AFTER_RAN = 'torch' in sys.modules\n"
    "import importlib.util\nimportlib.util.find_spec('timm')\nimport transformers\nimport timm",
}
NAMES = (
    "import sys, ran\n"
    "light = 'torch' not in sys.modules\n"
    "from ran import RegionAttentionNet, load_model, save_pretrained, REGION_PRESETS\n"
    "from ran.training import TrainConfig, train\n"
    "from ran.evaluation import summarize\n"
    "print(light, RegionAttentionNet.__name__, callable(load_model), callable(train),"
    " 'ferplus6' in REGION_PRESETS, ran.models.RAN_VARIANTS['ran']['backbone'])"
)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> dict[str, str]:
    """What each fresh interpreter below printed: the import orders, a saved folder loaded through timm,
    the package's names on first use."""
    import timm

    import ran

    model = timm.create_model("ran", backbone="test_resnet", region_size=32, num_classes=3)
    folder = ran.save_pretrained(model, tmp_path_factory.mktemp("startup") / "model")
    local_dir = (
        "import ran, timm\n"
        f"model = timm.create_model('local-dir:{folder}', pretrained=True)\n"
        "print(type(model).__name__, model.num_classes)"
    )
    codes = {name: REGISTERED.replace("ORDER", order) for name, order in ORDERS.items()}
    return pythons({**codes, "local-dir": local_dir, "names": NAMES})


@pytest.mark.parametrize("order", list(ORDERS))
def test_import_ran_registers_the_family_in_timm_in_either_order(order, fresh):
    answer = json.loads(fresh[order].splitlines()[-1])
    assert answer["torch_after_import_ran"] is False  # import ran alone stays light
    assert answer["family"] == FAMILY
    assert answer["built"] == "RegionAttentionNet"


def test_a_saved_ran_folder_loads_through_timm_after_import_ran(fresh):
    assert fresh["local-dir"].split() == ["RegionAttentionNet", "3"]


def test_the_package_names_resolve_on_first_use(fresh):
    assert fresh["names"].split() == ["True", "RegionAttentionNet", "True", "True", "True", "resnet18"]
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        import ran

        ran.no_such_name  # noqa: B018


def test_a_reader_that_stops_reading_ends_the_command_quietly(tmp_path):
    """``ran ... | head``: the closed pipe ends the command with a shell's SIGPIPE status and no traceback,
    also at exit, when Python flushes stdout again. The command writes more than a pipe holds, so the
    reader's close always meets it mid-write."""
    script = (
        "import sys\n"
        "from ran.cli import run_main\n"
        "def chatty(argv):\n"
        "    for i in range(100_000):\n"
        "        print('line', i, 'x' * 60)\n"
        "sys.exit(run_main(chatty, [], 'ran test'))\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path
    )
    assert child.stdout.readline().startswith(b"line 0")
    child.stdout.close()
    _, err = child.communicate(timeout=60)
    assert child.returncode == 141 and err == b"", err.decode()
