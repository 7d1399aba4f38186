"""MLflow tracking: the store, the experiment, and a Lightning callback that logs each run.

One run per (study, variant, seed). Its id is kept next to the checkpoints, so a resumed job
continues the same run; epochs already logged are not logged again. Metrics are sent once per
epoch in one batch, which keeps many parallel jobs on one SQLite store well clear of its lock.
"""

from __future__ import annotations

import logging
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from cnnlab.errors import StoreError, UserError
from cnnlab.study.config import TrackingConfig
from cnnlab.tracking.redaction import SECRET, redact, redact_text

log = logging.getLogger(__name__)

DEFAULT_DB = "results/mlflow.db"
MAX_PARAM_CHARS = 6000
# How long (s) a failing store is retried before the job gives up with one sentence (the setting
# tracking.retry_s owns it). Each SQLite attempt itself waits up to MLflow's 20 s busy timeout, so
# a job may wait one attempt longer.
RETRY_S = TrackingConfig.retry_s
# MLflow 3's UI opens an experiment without this tag in its GenAI (traces) view; this one opens
# the model-training view with the runs table.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def resolve_uri(configured: str = "", default_db: str | Path = DEFAULT_DB) -> str:
    """MLFLOW_TRACKING_URI wins, then the configured URI, then SQLite at results/mlflow.db.

    The default stays relative (to the working directory), so a project folder can be moved.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    if uri:
        return uri
    return f"sqlite:///{Path(default_db).as_posix()}"


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
    if redact(uri) != uri:  # MLflow prints "View run ... at: <the URI>" for each finished run, credentials too
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    db = sqlite_file(uri)
    if db is not None:
        from cnnlab.tracking.relocation import relocate_artifacts

        db.parent.mkdir(parents=True, exist_ok=True)
        relocate_artifacts(db)

    def open_store() -> MlflowClient:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
        return client

    try:
        return open_store()
    except Exception as e:  # connection refused, a bad URI, a broken database
        if store_failure(e) in (None, "unreachable"):
            raise UserError(
                f"The MLflow tracking store {redact(uri)} cannot be reached ({first_line(e, uri)}); start the "
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


def first_line(error: BaseException, uri: str | None = None) -> str:
    """The first line of an error's text (at most 300 characters), without credentials."""
    text = str(error).strip()
    return redact_text(text.splitlines()[0][:300] if text else type(error).__name__, uri)


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
    store = f"The MLflow tracking store {redact(uri)}" if uri else "The MLflow tracking store"
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
    return (f"{store} failed for {waited_s:.0f} s{while_} ({first_line(error, uri)}); check that it is running "
            "and reachable, then run the same command again to resume.")


def with_retry(fn, *args, wait_s: float | None = None, doing: str = "", uri: str | None = None, **kwargs):
    """Call fn, retrying while the store fails (locked, unreachable, full) for up to wait_s seconds.

    Pauses grow from 0.25 s to 8 s. What the store refuses (a bad request) is raised as it is; a
    store still failing after wait_s raises StoreError, one sentence without credentials.
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
                        first_line(e, uri), pause)
            time.sleep(pause)
            pause = min(pause * 2, 8.0)


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = str(v)[:MAX_PARAM_CHARS]
    return out


def safe_items(d: dict[str, str]) -> dict[str, str]:
    """Drop anything named like a secret, and credentials inside URIs anywhere in a value."""
    return {k: redact_text(str(v)) for k, v in d.items() if not SECRET.search(k)}


class MlflowTracker(pl.Callback):
    """Logs the per-epoch metrics the module computed, once, on the global-zero process."""

    def __init__(self, client: MlflowClient, run_id: str, last_logged_step: int = -1, wait_s: float | None = None):
        self.client, self.run_id = client, run_id
        self.last_logged_step = last_logged_step
        self.wait_s = wait_s

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        # Runs before ModelCheckpoint's own on_train_epoch_end (Lightning calls checkpoint callbacks
        # last), so an epoch is logged before its checkpoint exists: a job killed in between re-runs
        # that epoch, which is then skipped here instead of logged twice.
        metrics = pl_module.epoch_summary()  # every process takes part in its DDP reduction
        if not trainer.is_global_zero:
            return
        step = trainer.current_epoch
        if step <= self.last_logged_step or not metrics:
            return
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        batch += self._epoch_walls(pl_module, now)  # the previous epoch's, measured as this one started
        with_retry(self.client.log_batch, self.run_id, metrics=batch, wait_s=self.wait_s,
                   doing=f"logging epoch {step}'s metrics")
        self.last_logged_step = step

    def on_train_end(self, trainer: pl.Trainer, pl_module) -> None:
        # After the last epoch's checkpoints: its whole-epoch time is complete now.
        pl_module.end_epoch_wall()
        walls = self._epoch_walls(pl_module, int(time.time() * 1000))
        if trainer.is_global_zero and walls:
            with_retry(
                self.client.log_batch, self.run_id, metrics=walls, wait_s=self.wait_s, doing="logging epoch times"
            )

    @staticmethod
    def _epoch_walls(pl_module, now: int) -> list[Metric]:
        return [Metric("epoch_wall_seconds", s, now, e) for e, s in pl_module.pop_epoch_walls().items()]


def last_logged_step(client: MlflowClient, run_id: str) -> int:
    history = client.get_metric_history(run_id, "val/acc")
    return max((m.step for m in history), default=-1)


def start_or_resume_run(client, experiment_id: str, run_id: str | None, name: str, params: dict, tags: dict,
                        on_open=None, wait_s: float | None = None) -> tuple[str, int]:
    """Continue run_id when the store still has it, else start a new run; return (run_id, last step).

    on_open(run_id) is called as soon as the run exists, before its parameters are logged, so a
    job that fails in between can still close the run.
    """
    def retry(fn, *args, **kwargs):
        return with_retry(fn, *args, wait_s=wait_s, doing="opening its run", **kwargs)

    params = safe_items(params)
    if run_id:
        try:
            run = retry(client.get_run, run_id)
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise  # a store that fails is not a store without the run: never start a second one
            log.warning("MLflow run %s is gone from the store; starting a new run", run_id)
        else:
            if run.info.experiment_id == experiment_id:
                if on_open is not None:
                    on_open(run_id)
                if run.info.status != "RUNNING":
                    retry(client.update_run, run_id, status="RUNNING")
                # Parameters a failed first attempt did not get to log.
                _log_params(client, run_id, {k: v for k, v in params.items() if k not in run.data.params}, retry)
                return run_id, retry(last_logged_step, client, run_id)
    run = retry(client.create_run, experiment_id, run_name=name, tags=safe_items(tags))
    if on_open is not None:
        on_open(run.info.run_id)
    _log_params(client, run.info.run_id, params, retry)
    return run.info.run_id, -1


def _log_params(client, run_id: str, params: dict[str, str], retry) -> None:
    items = list(params.items())
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        retry(client.log_batch, run_id, params=[Param(k, v) for k, v in items[i : i + 100]])


def set_tags(client, run_id: str, tags: dict, wait_s: float | None = None) -> None:
    with_retry(client.log_batch, run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in safe_items(tags).items()],
               wait_s=wait_s, doing="tagging its run")


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


def init_study_tracking(
    uri: str, study: str, artifact_root: str | Path, stats_file: str | Path, info_out: str | Path
) -> dict:
    """Create store and experiment, record the data preparation as a run, write the info file."""
    import json

    from cnnlab.atomic import write_text
    from cnnlab.data.datamodule import load_stats

    stats = load_stats(Path(stats_file).with_suffix(".npz"))
    info = init_store(uri, study, artifact_root)
    client = MlflowClient(tracking_uri=uri)
    md5 = stats.get("archive_md5", "")

    def retry(fn, *args, **kwargs):
        return with_retry(fn, *args, doing="recording the data preparation", uri=uri, **kwargs)

    found = retry(client.search_runs, [info["experiment_id"]], max_results=1, filter_string=(
        f"tags.`cnnlab.kind` = 'prepare' and tags.data_md5 = '{md5}' and attributes.status = 'FINISHED'"))
    if not found:
        run = retry(client.create_run, info["experiment_id"], run_name="prepare_data",
                    tags={"cnnlab.kind": "prepare", "study": study, "data_md5": md5})
        try:
            params = {k: stats[k] for k in ("n_train", "n_val", "n_test", "val_size", "split_seed", "archive_md5")}
            params.update({f"zscore_mean_{c}": round(m, 6) for c, m in zip("rgb", stats["mean"], strict=True)})
            params.update({f"zscore_std_{c}": round(s, 6) for c, s in zip("rgb", stats["std"], strict=True)})
            retry(client.log_batch, run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
            retry(client.log_artifact, run.info.run_id, str(stats_file))
            retry(client.set_terminated, run.info.run_id, "FINISHED")
        except BaseException as e:
            try:
                with_retry(client.set_terminated, run.info.run_id, "FAILED", wait_s=30, uri=uri)
            except Exception:
                log.warning("could not mark the prepare_data run %s as FAILED", run.info.run_id)
            raise e
    write_text(info_out, json.dumps({**info, "tracking_uri": redact(uri)}, indent=2) + "\n")
    return info

