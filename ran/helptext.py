"""One help style for every command's flags, the library's (``ran train``'s options) and the CLI's.

argparse's ``ArgumentDefaultsHelpFormatter`` appends ``(default: None)`` to flags whose default means
"decided later" and repeats defaults a help text already states; :class:`HelpFormatter` shows a default only
where it is a real value, and :func:`finish_help` gives a parser (and its sub-commands) that style.
"""

from __future__ import annotations

import argparse
from typing import Any


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


def finish_help(parser: Any) -> Any:
    """Give ``parser`` (and its sub-commands' parsers) the one help style. Returns ``parser``."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                finish_help(sub)
    return parser
