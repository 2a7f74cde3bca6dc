"""File-system faults (disk full, quota, read-only, no permission) told apart from the command's own
errors, and said in one line naming the file: ``PATH: no space left on device``; and the few renames that
belong together kept together when the user interrupts (:func:`uninterrupted`)."""

from __future__ import annotations

import errno
import os
import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Errors of the file system, not of the command: disk full, quota, file too big, read-only, no permission,
# and what a path's form makes impossible there: a name too long for it, links that loop.
FAULT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
    | {errno.ENAMETOOLONG, errno.ELOOP}
)
_ERRNO_IN_TEXT = re.compile(r"(?:os error|errno)\s*(\d+)", re.IGNORECASE)  # safetensors, pyarrow


def fault_errno(err: BaseException) -> int | None:
    """The errno of a file-system fault (:data:`FAULT_ERRNOS`), also when a library wrapped it in its own
    error and only its message says it; None for any other error."""
    code = err.errno if isinstance(err, OSError) else None
    if code is None:
        match = _ERRNO_IN_TEXT.search(str(err)[:2000])
        code = int(match[1]) if match else None
    return code if code in FAULT_ERRNOS else None


def fault_message(err: BaseException) -> str | None:
    """``PATH: no space left on device`` (the file, then the reason) for a file-system fault, else None."""
    code = fault_errno(err)
    if code is None:
        return None
    reason = os.strerror(code)
    reason = reason[:1].lower() + reason[1:]
    name = getattr(err, "filename", None)
    return f"{name}: {reason}" if name else reason


# What a user or a service manager sends to stop a command (Ctrl-C, kill, a closed terminal).
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP until the block is done, then deliver them: the block is a few
    renames that together make an output (several result files moved in, a folder swapped), and stopping
    between two of them would leave the output half old, half new. The signals are caught and raised
    again afterwards (a process-wide signal may reach any thread, so masking one thread would not hold
    it); Python sets handlers only in the main thread, so elsewhere this holds nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda number, _: caught.append(number)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        for sig in dict.fromkeys(caught):
            signal.raise_signal(sig)


__all__ = ["FAULT_ERRNOS", "STOP_SIGNALS", "fault_errno", "fault_message", "uninterrupted"]
