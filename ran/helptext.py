"""One help style for every command's flags, the library's (``ran train``'s options) and the CLI's.

argparse's ``ArgumentDefaultsHelpFormatter`` appends ``(default: None)`` to flags whose default means
"decided later" and repeats defaults a help text already states; :class:`HelpFormatter` shows a default only
where it is a real value, and :func:`finish_help` gives a parser (and its sub-commands) that style.
"""

from __future__ import annotations

import argparse
import sys
import types
from typing import Any, NoReturn

from ran.errors import DEBUG_FLAG


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help with ``(default: X)`` appended from the flag's real default, only where it says
    something: not for a default of None / False / empty (the help says what happens then, if anything),
    not for an on/off flag, and not where the help already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if shown_default(action) is None or "default" in text.lower():
            return text
        return f"{text} (default: %(default)s)"


def shown_default(action: argparse.Action) -> Any:
    """The default :class:`HelpFormatter` shows for ``action``, or None when it shows none."""
    default = action.default
    empty = default is None or default is False or default is argparse.SUPPRESS
    if action.nargs == 0 or empty or (isinstance(default, (str, list, tuple)) and not default):
        return None
    if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
        return None
    return default


class _DebugFlag(argparse.Action):
    """``--debug``: read by ``ran.cli.run_main`` from the command line itself; nothing in the namespace."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        kwargs.update(nargs=0, default=argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        pass


def one_line_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    """A flag error as one line naming the flag and what was expected, and where the flags are listed,
    exit 2: argparse's usage block before it is a screen long for ``ran train`` and hides the line."""
    sys.stderr.write(f"{parser.prog}: error: {message} (see {parser.prog} --help)\n")
    sys.exit(2)


def finish_help(parser: Any) -> Any:
    """Give ``parser`` (and its sub-commands' parsers) the one help style, the one-line flag error and
    ``--debug``; an ``--no-X`` switch that ``HfArgumentParser`` adds for a boolean ``--X`` gets its own
    help line. Returns ``parser``."""
    parser.formatter_class = HelpFormatter
    parser.error = types.MethodType(one_line_error, parser)
    if not any(DEBUG_FLAG in action.option_strings for action in parser._actions):
        parser.add_argument(DEBUG_FLAG, action=_DebugFlag, help="on any error, show its full traceback")
    by_dest = {a.dest: a for a in parser._actions if a.option_strings and a.nargs != 0}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                finish_help(sub)
        elif isinstance(action, argparse._StoreFalseAction) and action.dest in by_dest:
            action.help = f"turn {by_dest[action.dest].option_strings[0]} off"
    return parser
