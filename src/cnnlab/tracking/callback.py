"""The Lightning callback that logs each epoch's metrics to a run, once, on the global-zero process.

One batch per epoch: many parallel jobs on one SQLite store stay well clear of its lock. A resumed
job passes the last step the run holds, so an epoch is never logged twice.

The batch is written on a thread of its own: a SQLite commit waits tens of milliseconds on the disk,
which the epoch's checkpoint serialization overlaps. The write is waited for before the checkpoint's
file is published (SafeCheckpointIO's `before_publish`), so a checkpoint of an epoch never exists
without that epoch's metrics. Not MLflow's `synchronous=False`: its queue logs a failed write as an
error of its own and drops the retries (cnnlab.tracking.store.with_retry) that keep a busy store
from ending a job, and the one sentence a store that stays down ends it with.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import Future, ThreadPoolExecutor

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
        self._writer: ThreadPoolExecutor | None = None  # where checkpoints wait for the write (setup)
        self._pending: Future | None = None  # the write under way

    def setup(self, trainer: pl.Trainer, pl_module, stage: str) -> None:
        waits = getattr(trainer.strategy.checkpoint_io, "before_publish", None)
        if waits is not None and self.settle not in waits:
            waits.append(self.settle)
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cnnlab-metrics")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        # Runs before ModelCheckpoint's own on_train_epoch_end (Lightning calls checkpoint callbacks
        # last), and the checkpoint waits for the write: an epoch is logged before its checkpoint
        # exists, and a job killed in between re-runs that epoch, which is then skipped here instead
        # of logged twice.
        metrics = pl_module.epoch_summary()  # every process takes part in its DDP reduction
        if not trainer.is_global_zero:
            return
        step = trainer.current_epoch
        if step <= self.last_logged_step or not metrics:
            return
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        batch += self._epoch_walls(pl_module, now)  # the previous epoch's, measured as this one started
        self._log(batch, f"logging epoch {step}'s metrics")
        self.last_logged_step = step

    def _log(self, batch: list[Metric], doing: str) -> None:
        self.settle()
        kwargs = {"metrics": batch, "wait_s": self.wait_s, "doing": doing}
        if self._writer is None:
            with_retry(self.client.log_batch, self.run_id, **kwargs)
        else:
            self._pending = self._writer.submit(with_retry, self.client.log_batch, self.run_id, **kwargs)

    def settle(self) -> None:
        """Wait for the write under way, if any; what made it fail is raised here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def on_exception(self, trainer: pl.Trainer, pl_module, exception: BaseException) -> None:
        # The job is ending with its own error: the epoch's metrics are kept if the store takes them.
        with contextlib.suppress(Exception):
            self.settle()

    def teardown(self, trainer: pl.Trainer, pl_module, stage: str) -> None:
        self.settle()
        if self._writer is not None:
            self._writer.shutdown()
            self._writer = None

    def on_train_end(self, trainer: pl.Trainer, pl_module) -> None:
        self.settle()
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
