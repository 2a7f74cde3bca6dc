"""One vocabulary, one error helper, one folder check, and bugs that keep their tracebacks.

The options a user chooses from (regions, detectors, colours, attention forms, precisions) are spelled in
``ran.vocabulary`` alone; the one-line error formatting is ``ran.errors.one_line`` alone; a bad input is a
``ran.errors.UserError`` (one line, exit 2) while any other exception is a bug and shows its traceback.
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
import torch

import ran
from ran.cli import main as ran_main
from ran.cli import run_main

PACKAGE = Path(__file__).resolve().parents[1] / "ran"
SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "vocabulary.py")
# The option vocabularies as the README and the help texts state them.
WORD_LISTS = {
    "REGION_MODES": {"model", "landmarks"},
    "DETECTORS": {"mtcnn", "cascade"},
    "COLOR_MODES": {"auto", "rgb", "gray"},
    "ATTENTION_MODES": {"softmax", "sigmoid"},
    "PRECISIONS": {"fp32", "bf16", "fp16"},
}
OWNED_NAMES = {
    *WORD_LISTS,
    "MIN_SIDE",
    "MIN_FACE_SIDE",
    "MIN_IMAGE_SIDE",
    "DETECTOR_ALIASES",
    "PRECISION_ALIASES",
}


def _string_collections(tree: ast.AST) -> list[tuple[int, set[str]]]:
    """(line, strings) of every tuple / list / set literal and dict literal's keys made of strings."""
    found = []
    for node in ast.walk(tree):
        items = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None)
        if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)) and items:
            if all(isinstance(i, ast.Constant) and isinstance(i.value, str) for i in items):
                found.append((node.lineno, {i.value for i in items}))
    return found


def test_no_vocabulary_is_spelled_out_outside_ran_vocabulary():
    copies = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, strings in _string_collections(tree):
            copies += [f"{path.name}:{line} {name}" for name, words in WORD_LISTS.items() if words <= strings]
        for node in tree.body:  # a module-level name the vocabulary owns, defined again
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            names = {getattr(t, "id", None) for t in targets} & OWNED_NAMES
            copies += [f"{path.name}:{node.lineno} {name}" for name in names]
    assert copies == []


def test_one_line_error_formatting_is_written_once():
    copies = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "join"
                and isinstance(node.func.value, ast.Constant)
                and node.func.value.value == " "
                and "split()" in ast.unparse(node)
            ):
                copies.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert copies == ["errors.py:29"]


def _choices(parser, flag: str) -> list[str]:
    [action] = [a for a in parser._actions if flag in a.option_strings]
    return list(action.choices)


def test_predict_and_app_offer_the_same_detectors_regions_and_precisions():
    from ran.cli.app import build_parser as app_parser
    from ran.cli.predict import build_parser as predict_parser

    predict, app = predict_parser(), app_parser()
    for flag in ("--detector", "--regions", "--precision"):
        assert _choices(predict, flag) == _choices(app, flag), flag
    assert set(_choices(app, "--detector")) == {"mtcnn", "cascade", "haar"}  # haar: the cascade's old name


def test_haar_is_the_cascade_everywhere():
    from ran.pipeline.faces import CascadeDetector, get_detector
    from ran.vocabulary import resolve_detector

    assert resolve_detector("haar") == "cascade"
    assert type(get_detector("haar")) is CascadeDetector


# --- user errors and bugs -------------------------------------------------------------------------------
def _raising(err: BaseException):
    def command(argv):
        raise err

    return command


@pytest.mark.parametrize(
    "bug", [ValueError("not enough values to unpack"), json.JSONDecodeError("Expecting value", "x", 0)]
)
def test_a_bug_keeps_its_traceback(bug, monkeypatch):
    monkeypatch.delenv("RAN_DEBUG", raising=False)
    with pytest.raises(type(bug)):
        run_main(_raising(bug), [], "ran x")


def test_a_user_error_is_one_line_unless_debug_is_asked_for(monkeypatch, capsys):
    from ran.errors import UserError

    monkeypatch.delenv("RAN_DEBUG", raising=False)
    assert run_main(_raising(UserError("--lr: expected > 0")), [], "ran x") == 2
    assert capsys.readouterr().err == "ran x: error: --lr: expected > 0\n"
    with pytest.raises(UserError):
        run_main(_raising(UserError("bad")), ["--debug"], "ran x")
    assert run_main(_raising(UserError("bad")), ["--", "--debug"], "ran x") == 2  # a value, not the flag
    monkeypatch.setenv("RAN_DEBUG", "1")
    with pytest.raises(UserError):
        run_main(_raising(UserError("bad")), [], "ran x")


def test_every_command_accepts_debug(capsys):
    assert ran_main(["models", "--debug"]) == 0
    assert "ran_resnet18" in capsys.readouterr().out


def test_bad_input_to_the_library_is_a_user_error():
    from ran.errors import UserError
    from ran.precision import resolve_precision
    from ran.transforms import FaceTransform

    with pytest.raises(UserError, match="expected at least 8 px"):
        FaceTransform(size=(4, 4))
    with pytest.raises(UserError, match="precision: expected one of fp32, bf16, fp16"):
        resolve_precision("fp8")


# --- one folder-safety check -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    import timm

    torch.manual_seed(0)
    model = timm.create_model("ran", backbone="test_resnet", region_size=32).eval()
    return ran.save_pretrained(model, tmp_path_factory.mktemp("folder") / "saved")


def test_models_and_checkpoints_refuse_pickles_by_one_rule(saved, tmp_path):
    from ran.modelio.checkpoints import read_checkpoint

    folder = Path(shutil.copytree(saved, tmp_path / "pickled"))
    (folder / "Optimizer.BIN").write_bytes(b"\x80\x04N.")
    refusals = []
    for load in (ran.load_model, read_checkpoint):
        with pytest.raises(ValueError) as info:
            load(folder)
        refusals.append(str(info.value).removeprefix("--resume "))
    assert refusals[0] == refusals[1]
    assert refusals[0].startswith(f"{folder / 'Optimizer.BIN'}: a pickle in a model folder")


def test_a_ran_0_1_checkpoint_is_refused_by_loading_and_resuming_alike(saved, tmp_path):
    from ran.modelio.checkpoints import read_checkpoint
    from ran.modelio.folder import LEGACY_CHECKPOINT_FILE

    folder = Path(shutil.copytree(saved, tmp_path / "old"))
    (folder / LEGACY_CHECKPOINT_FILE).write_text("{}")
    for load in (ran.load_model, read_checkpoint):
        with pytest.raises(ValueError, match="a training checkpoint from ran 0.1"):
            load(folder)


def test_flags_and_yaml_reach_into_no_private_argparse_table():
    """Flags get their number types through ``add_argument`` and YAML goes through ``parse_dict``: neither
    looks actions up in argparse's private ``_option_string_actions``."""
    users = [
        f"{path.relative_to(PACKAGE)}:{node.lineno}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Attribute) and node.attr == "_option_string_actions"
    ]
    assert users == []
