"""Credentials kept out of every message, log line, tag and file: URIs and free text, redacted.

A tracking URI may carry a user and password (`http://user:pass@host`) or a token in its query;
MLflow's own error messages repeat the full URL. Standard library only, so the workflow and every
job step can use it without importing MLflow.
"""

from __future__ import annotations

import logging
import os
import re
from urllib.parse import parse_qsl, unquote, urlencode, urlparse, urlunparse

SECRET = re.compile(r"token|password|passwd|secret|credential|api[_-]?key|auth", re.IGNORECASE)


def redact(uri: str) -> str:
    """The URI without user name, password and secret-looking query values, for logs and tags."""
    p = urlparse(uri)
    if p.username or p.password:
        host = p.hostname or ""
        if p.port:
            host = f"{host}:{p.port}"
        p = p._replace(netloc=host)
    if p.query and SECRET.search(p.query):
        query = [(k, "***" if SECRET.search(k) else v) for k, v in parse_qsl(p.query, keep_blank_values=True)]
        p = p._replace(query=urlencode(query, safe="*"))
    return urlunparse(p)


# scheme://user:password@ (or scheme://token@) inside any text, e.g. MLflow's "API request to ... failed"
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@'\"]+@")
_SECRET_QUERY = re.compile(r"([?&][^=&\s]*(?:token|password|passwd|secret|credential|api[_-]?key|auth)[^=&\s]*=)[^&\s'\"]+",
                           re.IGNORECASE)


_NOT_SECRET = re.compile(r"AUTHOR|_SOCK$|_DIR$|_PATH$|_FILE$", re.IGNORECASE)


def known_secrets(uri: str | None = None) -> set[str]:
    """Literal secrets to scrub: the URI's password (and user name), and secret-named environment values."""
    found = set()
    if uri:
        p = urlparse(uri)
        for part in (p.password, p.username):
            if part:
                found |= {part, unquote(part)}
    for key in ("MLFLOW_TRACKING_URI",):
        if os.environ.get(key) and os.environ[key] != uri:
            found |= known_secrets(os.environ[key])
    # Environment values named like secrets (MLFLOW_TRACKING_PASSWORD, AWS_SECRET_ACCESS_KEY, ...);
    # short values and names that only look alike (GIT_AUTHOR_NAME, SSH_AUTH_SOCK) would mangle logs.
    found |= {v for k, v in os.environ.items() if SECRET.search(k) and not _NOT_SECRET.search(k) and len(v) >= 8}
    return {s for s in found if len(s) >= 3}


def redact_text(text: str, uri: str | None = None) -> str:
    """Free text (an error message, a log line) without credentials from URLs or the environment."""
    text = _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(r"\1", str(text)))
    for secret in sorted(known_secrets(uri), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


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
