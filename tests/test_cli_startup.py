"""The command line answers at once: ``ran --help`` and every ``ran <command> --help`` parse without
importing torch (or timm, datasets), while ``import ran`` still registers the RAN models in
timm, whichever of the two is imported first."""

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


def python(code: str) -> str:
    """Run ``code`` in a fresh interpreter with this checkout first on the path; its stdout."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


HELP = """
import contextlib, io, json, sys
from ran.cli import main
shown = io.StringIO()
with contextlib.redirect_stdout(shown):
    try:
        code = main(ARGV)
    except SystemExit as done:
        code = done.code
imported = sorted(m for m in HEAVY if m in sys.modules)
print(json.dumps({"code": code, "help": shown.getvalue(), "imported": imported}))
"""


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_imports_nothing_heavy(command):
    argv = [command, "--help"] if command else ["--help"]
    code = HELP.replace("ARGV", repr(argv)).replace("HEAVY", repr(HEAVY))
    answer = json.loads(python(code).splitlines()[-1])
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


@pytest.mark.parametrize(
    "order",
    [
        "import ran\nTORCH_AFTER_RAN = 'torch' in sys.modules\nimport timm",
        "import timm\nimport ran\nTORCH_AFTER_RAN = False",
        "import ran\nTORCH_AFTER_RAN = 'torch' in sys.modules\nfrom timm.models import resnet\nimport timm",
        # transformers looks timm up (find_spec) without loading it; the real import still registers
        "import ran\nTORCH_AFTER_RAN = 'torch' in sys.modules\nimport importlib.util\n"
        "importlib.util.find_spec('timm')\nimport transformers\nimport timm",
    ],
    ids=["ran-then-timm", "timm-then-ran", "ran-then-timm-submodule", "timm-looked-up-before-import"],
)
def test_import_ran_registers_the_family_in_timm_in_either_order(order):
    answer = json.loads(python(REGISTERED.replace("ORDER", order)).splitlines()[-1])
    assert answer["torch_after_import_ran"] is False  # import ran alone stays light
    assert answer["family"] == FAMILY
    assert answer["built"] == "RegionAttentionNet"


def test_a_saved_ran_folder_loads_through_timm_after_import_ran(tmp_path):
    import timm

    import ran

    model = timm.create_model("ran", backbone="test_resnet", region_size=32, num_classes=3)
    folder = ran.save_pretrained(model, tmp_path / "model")
    code = (
        "import ran, timm\n"
        f"model = timm.create_model('local-dir:{folder}', pretrained=True)\n"
        "print(type(model).__name__, model.num_classes)"
    )
    assert python(code).split() == ["RegionAttentionNet", "3"]


def test_the_package_names_resolve_on_first_use():
    code = (
        "import sys, ran\n"
        "light = 'torch' not in sys.modules\n"
        "from ran import RegionAttentionNet, load_model, save_pretrained, REGION_PRESETS\n"
        "from ran.training import TrainConfig, train\n"
        "from ran.evaluation import summarize\n"
        "print(light, RegionAttentionNet.__name__, callable(load_model), callable(train),"
        " 'ferplus6' in REGION_PRESETS, ran.models.RAN_VARIANTS['ran']['backbone'])"
    )
    assert python(code).split() == ["True", "RegionAttentionNet", "True", "True", "True", "resnet18"]
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        import ran

        ran.no_such_name  # noqa: B018
