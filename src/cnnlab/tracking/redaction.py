"""Credentials kept out of every message, log line, tag and file: URIs and free text, redacted.

A tracking URI may carry a user and password (`http://user:pass@host`) or a token in its query;
MLflow's own error messages repeat the full URL. Standard library only, so the workflow and every
job step can use it without importing MLflow.
"""

from __future__ import annotations

import logging
import os
import re
from urllib.parse import unquote, urlparse

SECRET = re.compile(r"token|password|passwd|secret|credential|api[_-]?key|auth", re.IGNORECASE)
# "user:password@" right after a URL's scheme, up to the last @ before the host (a password may hold an @)
USERINFO = re.compile(r"(?<=://)[^/?#\s'\"<>]*@")
# the value of a query parameter named like a secret: ?token=..., &password=...
SECRET_QUERY = re.compile(rf"([?&][^=&#\s]*(?:{SECRET.pattern})[^=&#\s]*=)[^&#\s'\"<>]+", re.IGNORECASE)
# Environment names that only look like secrets (GIT_AUTHOR_NAME, SSH_AUTH_SOCK, ...)
NOT_SECRET = re.compile(r"AUTHOR|_SOCK$|_DIR$|_PATH$|_FILE$", re.IGNORECASE)
MIN_SECRET_CHARS = 6  # shorter values would blank ordinary words out of messages


def known_secrets(uri: str | None = None) -> set[str]:
    """Literal secrets to mask: a URI's password, and values of secret-named variables.

    The variables are MLFLOW_TRACKING_PASSWORD, ..._TOKEN, AWS_SECRET_ACCESS_KEY and the like, and
    the credentials inside MLFLOW_TRACKING_URI.
    """
    found = set()
    for source in (uri, os.environ.get("MLFLOW_TRACKING_URI")):
        if source:
            password = urlparse(source).password
            if password:
                found |= {password, unquote(password)}
    # One key at a time: MLflow's threads set and remove variables while a job runs, and a variable
    # that vanishes between listing and reading is skipped (os.environ.items() raised KeyError).
    values = (os.environ.get(k) for k in list(os.environ) if SECRET.search(k) and not NOT_SECRET.search(k))
    found |= {v for v in values if v is not None}
    return {s for s in found if len(s) >= MIN_SECRET_CHARS}


def redact_text(text: str, uri: str | None = None) -> str:
    """The text with the credentials of every URL in it removed and known secret values masked."""
    text = SECRET_QUERY.sub(r"\1***", USERINFO.sub("", str(text)))
    for secret in sorted(known_secrets(uri), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def redact(uri: str) -> str:
    """The URI without user name, password and secret query values, for logs, tags and rule parameters."""
    return redact_text(uri, uri)


class RedactingFilter(logging.Filter):
    """Scrubs credentials from every record a handler emits (MLflow's own messages name the URL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def redacted_traceback(error: BaseException) -> str:
    """The traceback Python would print, without credentials (for errors nobody foresaw)."""
    import traceback

    return redact_text("".join(traceback.format_exception(error)).rstrip())


def redact_logs() -> None:
    """Add RedactingFilter to every handler of the root logger (call after logging.basicConfig)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
