"""The ``ran`` command: one entry point that dispatches to each layer's own ``main``.

Every sub-command lives in its own module with ``main(argv) -> int`` so that it also runs as
``python -m ran.<module>`` (e.g. ``accelerate launch -m ran.train``) and imports only what it needs.
"""

from __future__ import annotations

import importlib
import os
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("ran.data.cli", "build FERPlus / RAF-DB / AffectNet / synthetic datasets as Parquet folders"),
    "train": ("ran.train", "train a RAN model (runs under accelerate launch)"),
    "evaluate": ("ran.evaluate", "accuracy of a model on every test subset"),
    "demo": ("ran.demo", "the main job end to end on the generated default dataset"),
    "predict": ("ran.predict", "find faces in photos / videos and predict their expression"),
    "export": ("ran.export", "export a RAN model to ONNX"),
    "convert": ("ran.convert", "convert original RAN .pth.tar checkpoints to safetensors"),
    "models": ("ran.models.cli", "list the registered RAN models"),
}


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback."""


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: ran <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'ran <command> --help' for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from ran import __version__

        print(f"ran {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"ran: error: unknown command {name!r}; expected one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return run_main(module.main, rest, prog=f"ran {name}")


def run_main(fn, argv: list[str] | None, prog: str) -> int:
    """Run a sub-command's ``main``; user errors become one clear line and exit code 2."""
    try:
        return int(fn(argv) or 0)
    except (UserError, ValueError, FileNotFoundError, NotADirectoryError, FileExistsError) as err:
        if os.environ.get("RAN_DEBUG"):
            raise
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # `python -m ran.cli`: dispatch through the imported module so its UserError is the one raised.
    from ran.cli import main as _entry

    sys.exit(_entry())
