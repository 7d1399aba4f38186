"""The MLflow store beneath every run: connect, create the experiment, retry a failing store, mark a
run ended, and say what went wrong in one sentence.

Metrics are sent once per epoch in one batch (cnnlab.tracking.callback), which keeps many parallel
jobs on one SQLite store well clear of its lock. The URI it is given carries no credentials
(cnnlab.tracking.uri moved them into MLflow's variables where the command started).
"""

from __future__ import annotations

import logging
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException

from cnnlab.errors import StoreError, UserError
from cnnlab.study.config import TrackingConfig

log = logging.getLogger(__name__)

# How long (s) a failing store is retried before the job gives up with one sentence (the setting
# tracking.retry_s owns it). Each SQLite attempt itself waits up to MLflow's 20 s busy timeout, so
# a job may wait one attempt longer.
RETRY_S = TrackingConfig.retry_s
# MLflow 3's UI opens an experiment without this tag in its GenAI (traces) view; this one opens
# the model-training view with the runs table.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# The longest tag value MLflow stores.
MAX_TAG_CHARS = 5000


def bound_http_waits(timeout_s: int) -> None:
    """Keep an unreachable server from stalling a job for minutes of MLflow's default retries."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")


def connect(uri: str, timeout_s: int = 20, wait_s: float = RETRY_S) -> MlflowClient:
    """A client whose store answered; a clear UserError otherwise.

    A server that refuses connections fails at once; a busy store (SQLite locked, a server
    answering 5xx) is waited for up to wait_s, as it is in the middle of a run.
    """
    bound_http_waits(timeout_s)
    quiet_store_errors()
    db = sqlite_file(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)

    def open_store() -> MlflowClient:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
        return client

    try:
        return open_store()
    except Exception as e:  # connection refused, a bad URI, a broken database
        if store_failure(e) in (None, "unreachable"):
            raise UserError(
                f"The MLflow tracking store {uri} cannot be reached ({first_line(e)}); start the "
                "server or fix MLFLOW_TRACKING_URI / tracking_uri, or train without tracking (tracking=none)."
            ) from None
    return with_retry(open_store, wait_s=wait_s, doing="connecting", uri=uri)


def ensure_experiment(client: MlflowClient, name: str, artifact_root: str | Path | None = None) -> str:
    """The experiment's id, creating it once (with its artifacts under artifact_root for SQLite),
    marked as a model-training experiment."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        for key, value in EXPERIMENT_KIND.items():  # an experiment made by an older cnnlab
            if exp.tags.get(key) != value:
                client.set_experiment_tag(exp.experiment_id, key, value)
        return exp.experiment_id
    location = Path(artifact_root).resolve().as_uri() if artifact_root else None
    try:
        return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
    except MlflowException:
        # Another process created it between our look-up and create.
        return ensure_experiment(client, name)


def init_store(uri: str, experiment: str, artifact_root: str | Path | None = None) -> dict:
    """Create the database (tables) and the experiment before any training job starts."""
    with _creation_lock(uri):
        client = connect(uri)
        local = uri.startswith("sqlite:") or uri.startswith("file:")
        exp_id = with_retry(ensure_experiment, client, experiment, artifact_root if local else None,
                            doing="creating the experiment", uri=uri)
    return {"tracking_uri": uri, "experiment": experiment, "experiment_id": exp_id}


def _creation_lock(uri: str):
    """Two studies started together create one SQLite store: MLflow's schema migrations are not
    safe to run twice at once ('Online migration expected to match one row'), so they take turns."""
    from contextlib import nullcontext

    from filelock import FileLock

    db = sqlite_file(uri)
    if db is None:
        return nullcontext()
    db.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(f"{db}.lock")


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (its query string aside); None for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def first_line(error: BaseException) -> str:
    """The first line of an error's text (at most 300 characters)."""
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


# What a failing store says, and what that means; checked in order on the error's text.
_FAILURES = (
    (re.compile(r"database or disk is full|no space left|ENOSPC|disk quota", re.I), "full"),
    (re.compile(r"readonly database|read-only file system", re.I), "read-only"),
    (re.compile(r"database is locked|database table is locked|SQLITE_BUSY", re.I), "locked"),
    (re.compile(r"connection refused|failed to establish|name or service not known|nodename nor servname|"
                r"temporary failure in name resolution|no route to host", re.I), "unreachable"),
    (re.compile(r"max retries exceeded|connection (?:reset|aborted)|remote ?disconnected|timed? ?out|"
                r"temporarily unavailable|too many (?:500|502|503|504|429) error responses|error code 5\d\d|"
                r"disk i/o error", re.I), "unavailable"),
)
# Answers about the request itself: retrying cannot change them.
_REFUSALS = {"RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS", "INVALID_PARAMETER_VALUE", "BAD_REQUEST",
             "INVALID_STATE", "PERMISSION_DENIED", "UNAUTHENTICATED", "CUSTOMER_UNAUTHORIZED", "ENDPOINT_NOT_FOUND"}


def store_failure(error: BaseException) -> str | None:
    """'full', 'read-only', 'locked', 'unreachable' or 'unavailable' when the store failed; None when it
    answered no (a bad request, a missing run)."""
    if isinstance(error, MlflowException) and error.error_code in _REFUSALS:
        return None
    if isinstance(error, OSError) and error.errno is not None:
        import errno

        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return "full"
        if error.errno == errno.EROFS:
            return "read-only"
    # MLflow wraps most SQLite errors, but not those of opening the store (SQLAlchemy's, sqlite3's own).
    if not isinstance(error, (MlflowException, OSError)) and not type(error).__module__.startswith(
        ("requests", "urllib3", "sqlalchemy", "sqlite3")
    ):
        return None
    text = f"{error} {error.__cause__ or ''}"
    for pattern, kind in _FAILURES:
        if pattern.search(text):
            return kind
    if isinstance(error, MlflowException) and error.error_code == "TEMPORARILY_UNAVAILABLE":
        return "unavailable"
    return None


def _client_uri(fn, uri: str | None) -> str | None:
    owner = getattr(fn, "__self__", None)
    return uri or getattr(owner, "tracking_uri", None) or os.environ.get("MLFLOW_TRACKING_URI")


def store_error_message(kind: str, error: BaseException, doing: str, waited_s: float, uri: str | None) -> str:
    store = f"The MLflow tracking store {uri}" if uri else "The MLflow tracking store"
    while_ = f" while {doing}" if doing else ""
    if kind == "full":
        return (f"{store} could not write{while_}: no space left on the device; free some space, "
                "then run the same command again to resume.")
    if kind == "read-only":
        return (f"{store} could not write{while_}: it is read-only; make the results folder writable, "
                "then run the same command again to resume.")
    if kind == "locked":
        return (f"{store} stayed locked for {waited_s:.0f} s{while_} (another process holds it, e.g. a long "
                "write); close that process or raise tracking.retry_s, then run the same command again to resume.")
    return (f"{store} failed for {waited_s:.0f} s{while_} ({first_line(error)}); check that it is running "
            "and reachable, then run the same command again to resume.")


def with_retry(fn, *args, wait_s: float | None = None, doing: str = "", uri: str | None = None, **kwargs):
    """Call fn, retrying while the store fails (locked, unreachable, full) for up to wait_s seconds.

    Pauses grow from 0.25 s to 8 s. What the store refuses (a bad request) is raised as it is; a
    store still failing after wait_s raises StoreError, one sentence.
    """
    wait_s = RETRY_S if wait_s is None else wait_s
    start = time.monotonic()
    pause = 0.25
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            kind = store_failure(e)
            if kind is None:
                raise
            waited = time.monotonic() - start
            if waited + pause > wait_s:
                raise StoreError(store_error_message(kind, e, doing, waited, _client_uri(fn, uri))) from None
            log.warning("the MLflow store failed%s (%s); retrying in %.1f s", f" while {doing}" if doing else "",
                        first_line(e), pause)
            time.sleep(pause)
            pause = min(pause * 2, 8.0)


def set_tags(client: MlflowClient, run_id: str, tags: dict, wait_s: float | None = None,
             doing: str = "tagging its run") -> None:
    tags = [RunTag(k, str(v)[:MAX_TAG_CHARS]) for k, v in tags.items()]
    with_retry(client.log_batch, run_id, tags=tags, wait_s=wait_s, doing=doing)


def end_run(client: MlflowClient, run_id: str, status: str, error: str = "", wait_s: float | None = None,
            only_if_running: bool = False, doing: str = "closing its run") -> bool:
    """Mark a run ended (FINISHED, FAILED or KILLED), with error as its `error` tag; every write retried.

    The one way a run is closed: by its own job, by the next job of its run folder, and by the sweep
    of abandoned runs. only_if_running leaves a run that is no longer RUNNING, or not in the store,
    as it is. Returns whether the run was marked.
    """
    if only_if_running:
        try:
            run = with_retry(client.get_run, run_id, wait_s=wait_s, doing=doing)
        except MlflowException:
            return False  # gone from the store
        if run.info.status != "RUNNING":
            return False
    if error:
        set_tags(client, run_id, {"error": error[:4000]}, wait_s=wait_s, doing=doing)
    with_retry(client.set_terminated, run_id, status, wait_s=wait_s, doing=doing)
    return True


@contextmanager
def quiet_mlflow():
    """MLflow's own INFO lines (e.g. 'View run at ...') clutter job logs."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def quiet_store_errors() -> None:
    """MLflow logs a full traceback for every SQLite error it re-raises; with_retry says it in one line."""
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
