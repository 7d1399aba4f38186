"""The one exception type for mistakes a user can fix; the CLIs print its message without a traceback."""

import errno


class UserError(Exception):
    """Bad input (config, data, paths): the message is one sentence saying what is wrong and how to fix it."""


# errno values a user fixes by freeing space or choosing another folder
_STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def storage_error_message(error: BaseException) -> str | None:
    """One sentence for a full disk or an unwritable folder, else None."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in _STORAGE_ERRNOS:
            where = error.filename or "an output file"
            return (
                f"Cannot write {where}: {_STORAGE_ERRNOS[error.errno]}; free some space or make the results "
                "folder writable (or run from another folder), then run the same command again to resume."
            )
        error = error.__cause__ or error.__context__
    return None
