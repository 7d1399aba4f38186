"""The Lightning callback that logs each epoch's metrics to a run, once, on the global-zero process.

One batch per epoch: many parallel jobs on one SQLite store stay well clear of its lock. A resumed
job passes the last step the run holds, so an epoch is never logged twice.
"""

from __future__ import annotations

import time

import pytorch_lightning as pl
from mlflow import MlflowClient
from mlflow.entities import Metric

from cnnlab.tracking.store import with_retry


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
