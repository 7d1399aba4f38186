"""The MLflow run of one training job: opened (or resumed), tagged, finished or marked failed."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from omegaconf import OmegaConf

from cnnlab import tracking
from cnnlab.atomic import write_text
from cnnlab.errors import StoreError
from cnnlab.models import Network, family_of
from cnnlab.provenance import device_name, git_state, versions
from cnnlab.redaction import redact, redact_text
from cnnlab.rundir import RunDir

log = logging.getLogger(__name__)

# result.json key -> MLflow metric name of the final numbers
FINAL_METRICS = {
    "test_acc": "test/acc",
    "test_loss": "test/loss",
    "best_val_acc": "best_val_acc",
    "epochs": "epochs",
    "params": "params",
    "job_seconds": "job_seconds",
    "startup_seconds": "startup_seconds",
}


def run_tags(cfg, net: Network, stats: dict, fp: str, adds: str) -> dict:
    commit, dirty = git_state()
    return {
        "cnnlab.kind": "train",
        "study": cfg.run.study,
        "variant": cfg.run.variant,
        "seed": cfg.seed,
        "model": family_of(cfg.model),
        "architecture": net.architecture,
        "adds": adds,
        "git_commit": commit,
        "git_dirty": dirty,
        "data_md5": stats.get("archive_md5", ""),
        "zscore_mean": json.dumps([round(v, 6) for v in stats["mean"]]),
        "zscore_std": json.dumps([round(v, 6) for v in stats["std"]]),
        "normalize": cfg.data.normalize,
        "config_fingerprint": fp,
        **versions(),
    }


class TrainingRun:
    """One training job's MLflow run: its id is kept in the run folder, so a resumed job continues it.

    Every store call is retried for tracking.retry_s while the store fails; a run that cannot be
    finished is marked FAILED (or KILLED), so none stays RUNNING after its job ends.
    """

    def __init__(self, cfg, run_dir: RunDir, fp: str, tags: dict, resuming: bool):
        uri = tracking.resolve_uri(cfg.tracking.uri)
        self.uri, self.wait_s, self.run_id = uri, cfg.tracking.retry_s, None
        self.client = tracking.connect(uri, cfg.tracking.timeout_s, self.wait_s)
        experiment = cfg.tracking.experiment or cfg.run.study
        local_root = Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts" if uri.startswith("sqlite:") else None
        exp_id = self._store("opening its experiment", tracking.ensure_experiment, self.client, experiment, local_root)
        state = run_dir.state()
        store = redact(uri)  # what the run folder may keep: never a password
        same_store = redact(state.get("tracking_uri", "")) == store
        previous = state.get("mlflow_run_id") if resuming and same_store else None
        params = tracking.flatten(OmegaConf.to_container(cfg, resolve=True))
        name = f"{cfg.run.variant}-seed{cfg.seed}"

        def opened(run_id: str) -> None:
            self.run_id = run_id
            run_dir.save_state(fingerprint=fp, mlflow_run_id=run_id, tracking_uri=store, experiment_id=exp_id)

        try:
            self.run_id, self.last_step = tracking.start_or_resume_run(
                self.client, exp_id, previous, name, params, tags, on_open=opened, wait_s=self.wait_s)
            abandoned = state.get("mlflow_run_id") if same_store and not resuming else None
            if abandoned and abandoned != self.run_id:
                self._close_replaced(abandoned)
            on_gpu = torch.cuda.is_available() and cfg.trainer.accelerator != "cpu"
            device = device_name(torch.device("cuda" if on_gpu else "cpu"))
            tracking.set_tags(self.client, self.run_id, {"device": device},
                              wait_s=self.wait_s)
            write_text(run_dir.config_file, redact_text(OmegaConf.to_yaml(cfg)))  # an artifact
            if self.last_step < 0:
                self._store("saving its config", self.client.log_artifact, self.run_id, str(run_dir.config_file))
        except BaseException as e:
            if self.run_id is not None:
                self.fail(e)
            raise

    def _close_replaced(self, old_run_id: str) -> None:
        """The run an unfinished job left (no intact checkpoint to resume it from): KILLED, naming its successor."""
        try:
            old = self._store("closing the previous run", self.client.get_run, old_run_id)
        except MlflowException:
            return  # gone from the store
        if old.info.status != "RUNNING":
            return
        reason = f"KILLED: no intact checkpoint was left to resume it; training started again as run {self.run_id}"
        tracking.set_tags(self.client, old_run_id, {"error": reason}, wait_s=self.wait_s)
        self._store("closing the previous run", self.client.set_terminated, old_run_id, "KILLED")

    def _store(self, doing: str, fn, *args, **kwargs):
        return tracking.with_retry(fn, *args, wait_s=self.wait_s, doing=doing, uri=self.uri, **kwargs)

    def callback(self) -> tracking.MlflowTracker:
        return tracking.MlflowTracker(self.client, self.run_id, self.last_step, self.wait_s)

    def log_parameter_count(self, n_params: int) -> None:
        if self.last_step < 0:
            self._store("logging the parameter count", self.client.log_metric, self.run_id, "params", n_params, step=0)

    def finish(self, run_dir: RunDir, result: dict) -> None:
        """Log the final numbers and the artifacts, then mark the run FINISHED (the caller fails it on error)."""
        now = int(time.time() * 1000)
        metrics = [Metric(name, float(result[key]), now, 0) for key, name in FINAL_METRICS.items()
                   if result.get(key) is not None]
        self._store("logging the final metrics", self.client.log_batch, self.run_id, metrics=metrics)
        for f in sorted(run_dir.artifacts.iterdir()):
            self._store(f"saving {f.name}", self.client.log_artifact, self.run_id, str(f))
        best = run_dir.checkpoints / "best.ckpt"
        if best.is_file():
            self._store("saving checkpoints/best.ckpt", self.client.log_artifact, self.run_id, str(best), "checkpoints")
        self._store("closing its run", self.client.set_terminated, self.run_id, "FINISHED")

    def fail(self, error: BaseException) -> None:
        """Mark the run KILLED (interrupted, terminated) or FAILED, with the reason in its `error` tag."""
        status = "KILLED" if isinstance(error, (KeyboardInterrupt, SystemExit)) else "FAILED"
        message = tracking.first_line(error, self.uri)
        # A store that just failed for retry_s gets a shorter second chance (s).
        wait_s = min(self.wait_s, 30) if isinstance(error, StoreError) else self.wait_s
        try:
            tracking.set_tags(self.client, self.run_id, {"error": f"{type(error).__name__}: {message}"[:4000]},
                              wait_s=wait_s)
            tracking.with_retry(self.client.set_terminated, self.run_id, status, wait_s=wait_s, doing="closing its run",
                                uri=self.uri)
        except Exception as e:  # the store itself may be what failed; the original error matters more
            log.warning("could not mark MLflow run %s as %s: %s", self.run_id, status, tracking.first_line(e, self.uri))
