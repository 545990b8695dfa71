"""The one error type of the data_prep CLI: its message is the single line printed to the user."""

from __future__ import annotations

import errno


class DataPrepError(Exception):
    """A user-facing failure (bad input, missing file, tokenizer mismatch, full disk...): one line, exit 2."""


def describe_os_error(exc: OSError, action: str) -> DataPrepError:
    """Turn an OSError into a one-line :class:`DataPrepError` (``action`` says what was being done)."""
    if exc.errno == errno.ENOSPC:
        reason = "no space left on device"
    elif exc.errno == errno.EDQUOT:
        reason = "disk quota exceeded"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = "permission denied" if exc.errno != errno.EROFS else "read-only file system"
    elif exc.errno == errno.ENOTDIR:
        reason = "a path component is not a directory"
    elif exc.errno == errno.ENOENT:
        reason = "no such file or directory"
    else:
        reason = exc.strerror or str(exc)
    where = f" ({exc.filename})" if exc.filename else ""
    return DataPrepError(f"{action}: {reason}{where}")
