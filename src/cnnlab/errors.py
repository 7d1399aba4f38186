"""The one exception type for mistakes a user can fix; the CLIs print its message without a traceback."""

import errno


class UserError(Exception):
    """Bad input (config, data, paths): the message is one sentence saying what is wrong and how to fix it."""


class StoreError(UserError):
    """The MLflow tracking store kept failing (locked, unreachable, full) after its retries."""


# errno values a user fixes by freeing space or choosing another folder
_STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


# What SQLite says for the same conditions (an MLflow store reports them as text, not errno)
_SQLITE_STORAGE = {
    "database or disk is full": errno.ENOSPC,
    "attempt to write a readonly database": errno.EROFS,
}


def storage_error_message(error: BaseException) -> str | None:
    """One sentence for a full disk or an unwritable folder, else None."""
    while error is not None:
        code, where = None, None
        if isinstance(error, OSError) and error.errno in _STORAGE_ERRNOS:
            code, where = error.errno, error.filename
        else:
            code = next((c for text, c in _SQLITE_STORAGE.items() if text in str(error).lower()), None)
            where = "the MLflow database" if code else None
        if code is not None:
            return (
                f"Cannot write {where or 'an output file'}: {_STORAGE_ERRNOS[code]}; free some space or make the "
                "results folder writable (or run from another folder), then run the same command again to resume."
            )
        error = error.__cause__ or error.__context__
    return None
