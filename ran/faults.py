"""File-system faults (disk full, quota, read-only, no permission) told apart from the command's own
errors, and said in one line naming the file: ``PATH: no space left on device``."""

from __future__ import annotations

import errno
import os
import re

# Errors of the file system, not of the command: disk full, quota, file too big, read-only, no permission.
FAULT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
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


__all__ = ["FAULT_ERRNOS", "fault_errno", "fault_message"]
