"""What the user did wrong, told apart from a bug in this package, and said in one line.

Library code raises :class:`UserError` for bad input (a value out of range, a file that is not what it
should be, an option that cannot work). It is a ``ValueError``, so ``except ValueError`` keeps working.
``ran.cli.run_main`` prints a user error as one line with exit code 2; any other exception, a
``ValueError`` from a bug included, keeps its traceback. ``--debug`` or ``RAN_DEBUG=1`` shows the traceback
of anything. This module imports nothing heavy (the command-line parsers use it before torch is loaded).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

MESSAGE_CHARS = 1000  # an error line is cut to this length: it never embeds an unbounded value
DEBUG_FLAG = "--debug"
DEBUG_ENV = "RAN_DEBUG"


class UserError(ValueError):
    """Bad input, named in the message with what was expected: reported in one line, no traceback."""


def one_line(err: object, limit: int = MESSAGE_CHARS) -> str:
    """``err``'s message (an exception, a warning, any text: library messages are one line, those of
    PIL, pyarrow or OpenCV may not be) on one line, at most ``limit`` characters; an exception without
    a message gives its type's name."""
    full = str(err)
    text = " ".join(full[: 4 * limit].split())
    if len(text) > limit or len(full) > 4 * limit:
        text = text[: limit - 3] + "..."
    return text or (type(err).__name__ if isinstance(err, BaseException) else "")


class Note(UserWarning):
    """What the user should know, not an error (``ran`` commands print it as one ``note:`` line)."""


def debug_requested(argv: Sequence[str] | None) -> bool:
    """Whether the traceback of any error should be shown: ``--debug`` among the flags (before a ``--``)
    or ``RAN_DEBUG`` set to anything but empty or ``0``."""
    flags = list(argv or ())
    if "--" in flags:
        flags = flags[: flags.index("--")]
    return DEBUG_FLAG in flags or os.environ.get(DEBUG_ENV, "") not in ("", "0")


__all__ = ["DEBUG_ENV", "DEBUG_FLAG", "MESSAGE_CHARS", "UserError", "debug_requested", "one_line"]
