"""The shape of the package, as the project's charter states it, read from the source with ``ast``:
commands are peers, library layers do not lean on each other, short functions and files, no pickles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ran"
CLI_SHARED = {"ran.cli", "ran.cli.options"}  # the dispatcher and the flag helper, used by every command
# Library layers that belong to one command each (or a few): none may import another.
LAYERS = ("ran.training", "ran.evaluation", "ran.pipeline", "ran.export", "ran.modelio.convert", "ran.app")
# Layers built on another one's public API: the web app is prediction behind a page.
BUILT_ON = {"ran.app": {"ran.pipeline"}}
MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 450


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts).removesuffix(".__init__")] = path
    return modules


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every absolute import in the file, function-level ones included: (line, module or module.name)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _layer(module: str) -> str | None:
    return next((layer for layer in LAYERS if module == layer or module.startswith(layer + ".")), None)


def test_commands_are_peers():
    modules = _modules()
    commands = {
        m for m in modules if m.startswith("ran.cli.") and m not in CLI_SHARED and m != "ran.cli.__main__"
    }
    assert {
        "ran.cli.data",
        "ran.cli.train",
        "ran.cli.evaluate",
        "ran.cli.predict",
        "ran.cli.export",
    } <= commands
    crossings = [
        f"{modules[command]}:{line} imports {target}"
        for command in sorted(commands)
        for line, target in _imports(modules[command])
        if any(target == other or target.startswith(other + ".") for other in commands - {command})
    ]
    assert not crossings, "a command imports another command:\n" + "\n".join(crossings)


def test_library_layers_do_not_import_each_other_or_the_cli():
    problems = []
    for module, path in _modules().items():
        own = _layer(module)
        if module.startswith("ran.cli") or module in ("ran.train", "ran.__main__"):
            continue
        for line, target in _imports(path):
            other = _layer(target)
            if target == "ran.cli" or target.startswith("ran.cli."):
                problems.append(f"{path}:{line} ({module}) imports the command line ({target})")
            elif own and other and other != own and other not in BUILT_ON.get(own, ()):
                problems.append(f"{path}:{line} ({own}) imports another layer ({target})")
    assert not problems, "\n".join(problems)


def test_short_functions_and_files_outside_the_model_layer():
    long_functions, long_files = [], []
    for module, path in _modules().items():
        if module.startswith("ran.models"):
            continue
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_FILE_LINES:
            long_files.append(f"{path}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path}:{node.lineno} {node.name}: {length} lines")
    assert not long_files, f"files over {MAX_FILE_LINES} lines:\n" + "\n".join(long_files)
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long_functions)


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
            yield node, owner, name


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_pickle_is_ever_loaded_and_no_module_class_is_swapped(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node, owner, name in _calls(tree):
        keywords = {k.arg: k.value for k in node.keywords}
        if owner == "torch" and name == "load":
            safe = keywords.get("weights_only")
            assert isinstance(safe, ast.Constant) and safe.value is True, f"{path}:{node.lineno} torch.load"
        assert not (owner == "pickle" and name in ("load", "loads")), f"{path}:{node.lineno} pickle.{name}"
        assert name != "load_state", f"{path}:{node.lineno}: accelerate's load_state unpickles"
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                assert not (isinstance(target, ast.Attribute) and target.attr == "__class__"), (
                    f"{path}:{node.lineno} assigns a __class__"
                )
