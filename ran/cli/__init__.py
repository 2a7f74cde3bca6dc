"""The ``ran`` command: one entry point over peer sub-commands, one module each in this package.

A sub-command module parses its arguments and calls the library; it never imports another sub-command.
Library code raises ``ran.errors.UserError`` (a ``ValueError``) / ``FileNotFoundError`` / ... for bad input;
:func:`run_main` is the one place where they become one clear line on stderr and exit code 2; any other
error is a bug and keeps its traceback (``--debug`` or ``RAN_DEBUG=1`` shows every traceback). A
write the file system refuses (disk full, read-only, no permission) is one line naming the file, exit
code 1. Progress bars still open are closed first, so the error is the last line, on its own. An optional
output left out for want of an extra (``ran.extras.optional_part``) is one ``note:`` line.
Each module also runs as ``python -m ran.cli.<name>``; ``python -m ran.train`` and
``accelerate launch -m ran.train`` start ``ran train`` under a launcher.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator

from ran.errors import MESSAGE_CHARS, Note, UserError, debug_requested, one_line  # noqa: F401 (ran.cli.one_line)
from ran.extras import MissingExtra
from ran.faults import STOP_SIGNALS

# name -> one-line help; the module is ran.cli.<name>
COMMANDS: dict[str, str] = {
    "data": "build FERPlus / RAF-DB / AffectNet / synthetic datasets as Parquet folders",
    "train": "train a RAN model (runs under accelerate launch)",
    "evaluate": "accuracy of a model on every test subset",
    "compare": "paired comparison of two models on the same faces",
    "robustness": "accuracy and attention under occlusion, pose-like warps and corruptions",
    "demo": "the main job end to end on the generated default dataset",
    "predict": "find faces in photos / videos and predict their expression",
    "app": "a web page for trying a model on photos and webcam snapshots (Gradio)",
    "export": "export a RAN model to ONNX",
    "convert": "convert original RAN .pth.tar checkpoints to safetensors",
    "models": "list the registered RAN models",
}

# What the user did wrong, as opposed to a bug: reported in one line. A missing optional package
# (MissingExtra, an ImportError) is one too: its message names the extra to install. Any other error
# (a ValueError or KeyError from a bug included) keeps its traceback.
USER_ERRORS = (
    UserError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    FileExistsError,
    MissingExtra,
)


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: ran <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, help_ in COMMANDS.items()]
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
    module = importlib.import_module(f"ran.cli.{name}")
    return run_main(module.main, rest, prog=f"ran {name}")


EXIT_USER_ERROR, EXIT_FAULT, EXIT_INTERRUPTED = 2, 1, 130
EXIT_READER_GONE = 141  # what a shell reports for a command that a closed pipe stopped (128 + SIGPIPE)


def run_main(fn: Callable[[list[str] | None], int | None], argv: list[str] | None, prog: str) -> int:
    """Run a sub-command's ``main``; user errors become one clear line and exit code 2, file-system
    faults one line and exit code 1, Ctrl-C one line (with how to continue, when the command says).
    Anything else is a bug and keeps its traceback; ``--debug`` / ``RAN_DEBUG=1`` show every traceback."""
    debug = debug_requested(sys.argv[1:] if argv is None else argv)
    stopped_by: list[int] = []
    try:
        _check_utf8(sys.argv[1:] if argv is None else argv)
        with _notes_on_one_line(prog), _stops_as_interrupts(stopped_by):
            code = int(fn(argv) or 0)
        if stopped_by:  # a server (ran app) that caught the interruption itself and closed
            return _report(prog, f"stopped by {signal.Signals(stopped_by[0]).name}", 128 + stopped_by[0])
        return code
    except USER_ERRORS as err:
        if debug:
            raise
        return _report(prog, f"error: {one_line(err)}", EXIT_USER_ERROR)
    except BrokenPipeError:
        return _reader_gone()
    except OSError as err:
        from ran.faults import fault_message

        message = fault_message(err)
        if message is None and _from_the_hub(err) and not debug:  # offline: a ConnectionError
            return _report(prog, f"error: the Hugging Face Hub: {one_line(err)}", EXIT_USER_ERROR)
        if message is None or debug:
            raise
        return _report(prog, f"error: {one_line(message)}", EXIT_FAULT)
    except KeyboardInterrupt as err:
        detail = one_line(err) if str(err) else ""
        what = f"stopped by {signal.Signals(stopped_by[0]).name}" if stopped_by else "interrupted"
        code = 128 + stopped_by[0] if stopped_by else EXIT_INTERRUPTED
        return _report(prog, f"{what}{'; ' + detail if detail else ''}", code)
    except Exception as err:
        if _from_the_hub(err) and not debug:  # offline, no such repo, a bad id: the Hub's answer, not a bug
            return _report(prog, f"error: the Hugging Face Hub: {one_line(err)}", EXIT_USER_ERROR)
        close_progress_bars()  # the traceback starts on a line of its own
        raise


@contextlib.contextmanager
def _stops_as_interrupts(stopped_by: list[int]) -> Iterator[None]:
    """SIGTERM and SIGHUP stop a command as Ctrl-C does: half-written outputs, locks and temporary
    folders are removed on the way out and ``ran train`` says how to continue (by default they end the
    process at once, leaving all of it behind). The signal is recorded in ``stopped_by``; a signal the
    caller ignores (``nohup``) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(number: int, _frame: object) -> None:
        stopped_by.append(number)
        raise KeyboardInterrupt

    # kill / timeout / a batch system / docker stop, a closed terminal (Ctrl-C is Python's already)
    previous = {sig: signal.getsignal(sig) for sig in sorted(STOP_SIGNALS - {signal.SIGINT})}
    for sig, handler in previous.items():
        if handler is signal.SIG_DFL:
            signal.signal(sig, stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is signal.SIG_DFL:
                signal.signal(sig, handler)


def _check_utf8(argv: list[str]) -> None:
    """Refuse arguments that are not UTF-8 text (a file name of other bytes): the results, tables, JSON
    and Parquet files that name them cannot, and the command would fail only after all its work."""
    for index, arg in enumerate(argv, start=1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise UserError(
                f"argument {index} '{shown}' is not UTF-8 text; rename the file or folder"
            ) from None


def _from_the_hub(err: Exception) -> bool:
    """Whether ``err`` is one of huggingface_hub's own errors (matched by module, so that the CLI need not
    import huggingface_hub to recognise them)."""
    return any(kind.__module__.startswith("huggingface_hub") for kind in type(err).__mro__)


def _reader_gone() -> int:
    """stdout's reader stopped reading (``ran predict ... | head``): stop quietly, as Unix tools do. stdout
    then points at /dev/null, or Python would meet the closed pipe again when it flushes at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_READER_GONE


@contextlib.contextmanager
def _notes_on_one_line(prog: str) -> Iterator[None]:
    """Show a :class:`ran.errors.Note` (a missing extra's left-out output, say) as ``prog: note: ...``
    (no source line under it); other warnings as Python shows them."""
    with warnings.catch_warnings():
        show = warnings.showwarning

        def showwarning(
            message: Warning | str, category: type[Warning], *args: object, **kwargs: object
        ) -> None:
            if issubclass(category, Note):
                print(f"{prog}: note: {one_line(str(message))}", file=sys.stderr, flush=True)
            else:
                show(message, category, *args, **kwargs)

        warnings.showwarning = showwarning
        yield


def _report(prog: str, message: str, code: int) -> int:
    """Print ``prog: message`` as the last line on stderr; returns ``code``."""
    close_progress_bars()
    print(f"{prog}: {message}", file=sys.stderr, flush=True)
    return code


def close_progress_bars() -> None:
    """Close every tqdm bar still open (one an error left behind), so nothing is drawn after the error
    line and the error does not start on the bar's unfinished line."""
    std = sys.modules.get("tqdm.std")
    if std is None:
        return
    for bar in list(std.tqdm._instances):
        bar.close()
    sys.stdout.flush()


def run_module(main_fn: Callable[[list[str] | None], int | None], prog: str) -> None:
    """``python -m ran.cli.<name>``: run ``main_fn`` on ``sys.argv`` and exit with its code."""
    sys.exit(run_main(main_fn, None, prog=prog))
