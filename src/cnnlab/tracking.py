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

from cnnlab.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_DB = "results/mlflow.db"
SECRET = re.compile(r"token|password|passwd|secret|credential|api[_-]?key|auth", re.IGNORECASE)
MAX_PARAM_CHARS = 6000
# MLflow 3's UI opens an experiment without this tag in its GenAI (traces) view; this one opens
# the model-training view with the runs table.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def resolve_uri(configured: str = "", default_db: str | Path = DEFAULT_DB) -> str:
    """MLFLOW_TRACKING_URI wins, then the configured URI, then SQLite at results/mlflow.db."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    if uri:
        return uri
    return f"sqlite:///{Path(default_db).resolve()}"


# "user:password@" right after a URL's scheme, up to the last @ before the host (a password may hold an @)
USERINFO = re.compile(r"(?<=://)[^/?#\s'\"<>]*@")
# the value of a query parameter named like a secret: ?token=..., &password=...
SECRET_QUERY = re.compile(rf"([?&][^=&#\s]*(?:{SECRET.pattern})[^=&#\s]*=)[^&#\s'\"<>]+", re.IGNORECASE)
MIN_SECRET_CHARS = 6  # shorter environment values would blank ordinary words out of messages


def known_secrets() -> list[str]:
    """Values of environment variables named like secrets (MLFLOW_TRACKING_PASSWORD, ..._TOKEN, ...)."""
    # One key at a time: MLflow's threads set and remove variables while a job runs, and a variable
    # that vanishes between listing and reading is skipped (os.environ.items() raised KeyError).
    values = (os.environ.get(k) for k in list(os.environ) if SECRET.search(k))
    return [v for v in values if v is not None and len(v) >= MIN_SECRET_CHARS]


def redact_text(text: str) -> str:
    """The text with the credentials of every URL in it removed and known secret values masked."""
    text = SECRET_QUERY.sub(r"\1***", USERINFO.sub("", text))
    for value in known_secrets():
        text = text.replace(value, "***")
    return text


def redact(uri: str) -> str:
    """The URI without user name and password, for logs and tags."""
    return redact_text(uri)


def bound_http_waits(timeout_s: int) -> None:
    """Keep an unreachable server from stalling a job for minutes of MLflow's default retries."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")


def connect(uri: str, timeout_s: int = 20) -> MlflowClient:
    """A client whose store answered; a clear UserError otherwise."""
    bound_http_waits(timeout_s)
    if redact(uri) != uri:  # MLflow prints "View run ... at: <the URI>" for each finished run, credentials too
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    except Exception as e:  # connection refused, timeouts, a broken database
        # MLflow's message repeats the URL it called, credentials included.
        first = redact_text(str(e).strip().splitlines()[0])[:300] if str(e).strip() else type(e).__name__
        raise UserError(
            f"The MLflow tracking store {redact(uri)} cannot be reached ({first}); start the server "
            "or fix MLFLOW_TRACKING_URI / tracking_uri, or train without tracking (tracking=none)."
        ) from None
    return client


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
        exp_id = ensure_experiment(client, experiment, artifact_root if local else None)
    return {"tracking_uri": uri, "experiment": experiment, "experiment_id": exp_id}


def _creation_lock(uri: str):
    """Two studies started together create one SQLite store: MLflow's schema migrations are not
    safe to run twice at once ('Online migration expected to match one row'), so they take turns."""
    from contextlib import nullcontext

    from filelock import FileLock

    if not uri.startswith("sqlite:///"):
        return nullcontext()
    db = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    db.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(f"{db}.lock")


def with_retry(fn, *args, attempts: int = 8, **kwargs):
    """Call fn, retrying on SQLite's 'database is locked' with growing pauses (about 30 s in all)."""
    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except MlflowException as e:
            if "locked" not in str(e).lower() or i == attempts - 1:
                raise
            time.sleep(0.25 * 2**i)


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

    def __init__(self, client: MlflowClient, run_id: str, last_logged_step: int = -1):
        self.client, self.run_id = client, run_id
        self.last_logged_step = last_logged_step

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
        with_retry(self.client.log_batch, self.run_id, metrics=batch)
        self.last_logged_step = step

    def on_train_end(self, trainer: pl.Trainer, pl_module) -> None:
        # After the last epoch's checkpoints: its whole-epoch time is complete now.
        pl_module.end_epoch_wall()
        walls = self._epoch_walls(pl_module, int(time.time() * 1000))
        if trainer.is_global_zero and walls:
            with_retry(self.client.log_batch, self.run_id, metrics=walls)

    @staticmethod
    def _epoch_walls(pl_module, now: int) -> list[Metric]:
        return [Metric("epoch_wall_seconds", s, now, e) for e, s in pl_module.pop_epoch_walls().items()]


def last_logged_step(client: MlflowClient, run_id: str) -> int:
    history = client.get_metric_history(run_id, "val/acc")
    return max((m.step for m in history), default=-1)


def start_or_resume_run(
    client, experiment_id: str, run_id: str | None, name: str, params: dict, tags: dict
) -> tuple[str, int]:
    """Continue run_id when the store still has it, else start a new run; return (run_id, last step)."""
    if run_id:
        try:
            run = with_retry(client.get_run, run_id)
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise  # a store that fails is not a store without the run: never start a second one
            log.warning("MLflow run %s is gone from the store; starting a new run", run_id)
        else:
            if run.info.experiment_id == experiment_id:
                if run.info.status != "RUNNING":
                    with_retry(client.update_run, run_id, status="RUNNING")
                return run_id, with_retry(last_logged_step, client, run_id)
    run = with_retry(client.create_run, experiment_id, run_name=name, tags=safe_items(tags))
    params = safe_items(params)
    items = list(params.items())
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        batch = [Param(k, v) for k, v in items[i : i + 100]]
        with_retry(client.log_batch, run.info.run_id, params=batch)
    return run.info.run_id, -1


def set_tags(client, run_id: str, tags: dict) -> None:
    with_retry(client.log_batch, run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in safe_items(tags).items()])


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


def init_study_tracking(
    uri: str, study: str, artifact_root: str | Path, stats_file: str | Path, info_out: str | Path
) -> dict:
    """Create store and experiment, record the data preparation as a run, write the info file."""
    import json

    from cnnlab.atomic import write_text

    info = init_store(uri, study, artifact_root)
    client = MlflowClient(tracking_uri=uri)
    stats = json.loads(Path(stats_file).read_text())
    md5 = stats.get("archive_md5", "")
    found = client.search_runs(
        [info["experiment_id"]],
        filter_string=f"tags.`cnnlab.kind` = 'prepare' and tags.data_md5 = '{md5}'",
        max_results=1,
    )
    if not found:
        run = client.create_run(
            info["experiment_id"],
            run_name="prepare_data",
            tags={"cnnlab.kind": "prepare", "study": study, "data_md5": md5},
        )
        params = {k: stats[k] for k in ("n_train", "n_val", "n_test", "val_size", "split_seed", "archive_md5")}
        params.update({f"zscore_mean_{c}": round(m, 6) for c, m in zip("rgb", stats["mean"], strict=True)})
        params.update({f"zscore_std_{c}": round(s, 6) for c, s in zip("rgb", stats["std"], strict=True)})
        client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        client.log_artifact(run.info.run_id, str(stats_file))
        client.set_terminated(run.info.run_id, "FINISHED")
    write_text(info_out, json.dumps({**info, "tracking_uri": redact(uri)}, indent=2) + "\n")
    return info
