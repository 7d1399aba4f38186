"""The Lightning Trainer a run uses: device settings, checkpoints, a profiler without cost, quiet logs."""

from __future__ import annotations

import contextlib
import logging
import warnings

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.profilers import PassThroughProfiler
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from cnnlab.atomic import write_text
from cnnlab.errors import UserError
from cnnlab.models import family_of
from cnnlab.study.estimate import bf16_speedup
from cnnlab.study.precision import PrecisionChoice, choose
from cnnlab.training.checkpoint import RelocatableCheckpoint, SafeCheckpointIO
from cnnlab.training.rundir import RunDir


class NoProfiler(PassThroughProfiler):
    """Lightning's default no-op profiler without its cost.

    The default still opens a generator context manager around every hook call, ~20 of them per
    training step: tens of microseconds, which show against a small network's few-millisecond
    step on a CPU. A shared `nullcontext` does nothing at a fraction of that.
    """

    _nothing = contextlib.nullcontext()

    def profile(self, action_name: str):
        return self._nothing


class PlateauStepOnResume(pl.Callback):
    """Keeps a resumed run's plateau schedule in step with an unbroken run's.

    Lightning steps a ReduceLROnPlateau schedule after the epoch's checkpoint is written, and does
    not take that step again when it resumes from it (the monitored metric is not in the
    checkpoint). The metrics are saved here, and the missing step is taken when training resumes.
    """

    def __init__(self):
        self.metrics: dict[str, float] = {}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["cnnlab_monitored"] = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.metrics = checkpoint.get("cnnlab_monitored", {})

    def on_train_start(self, trainer, pl_module) -> None:
        for config in trainer.lr_scheduler_configs:
            behind = config.reduce_on_plateau and config.scheduler.last_epoch < trainer.current_epoch
            if behind and config.monitor in self.metrics:
                config.scheduler.step(self.metrics[config.monitor])


@contextlib.contextmanager
def denormals_flushed(enabled: bool):
    """While inside, the CPU takes denormal floats (below 1.2e-38) as zero and makes none (its FTZ
    and DAZ flags, which threads started inside inherit); PyTorch's default again on the way out."""
    if not enabled:
        yield
        return
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def choose_precision(cfg, run_dir: RunDir | None = None, resuming: bool = False) -> PrecisionChoice:
    """The run's precision (cnnlab.study.precision.choose), kept in its run folder: a resumed run
    trains on in the precision it started in, whatever a new probe would say."""
    saved = run_dir.precision_file if run_dir is not None else None
    if resuming and saved is not None and saved.is_file():
        return PrecisionChoice.from_json(saved.read_text())
    # Measured here only where the run trains on the CPU in one process: DDP's processes would each
    # measure, and could disagree.
    alone = cfg.trainer.devices * cfg.trainer.num_nodes == 1
    choice = choose(cfg.trainer.precision, cfg.trainer.accelerator, family_of(cfg.model),
                    measure=(lambda: bf16_speedup(cfg, torch.device("cpu"))) if alone else None)
    if saved is not None and rank_zero_only.rank == 0:
        write_text(saved, choice.to_json() + "\n")
    return choice


def build_trainer(cfg, run_dir: RunDir, callbacks: list[pl.Callback],
                  precision: str | None = None) -> tuple[pl.Trainer, ModelCheckpoint]:
    """The Trainer, and the callback that keeps the best checkpoint (by val/acc); `precision`
    resolved by choose_precision (None: resolved here)."""
    t = cfg.trainer
    mode = precision or choose_precision(cfg).precision
    if t.gradient_clip_val and "mixed" in mode and cfg.optimizer.get("fused"):
        # Lightning clips after unscaling the gradients, which a fused optimizer does inside its step.
        raise UserError(f"trainer.gradient_clip_val={t.gradient_clip_val} cannot clip the gradients of a fused "
                        f"optimizer under {mode} precision; add optimizer.fused=false, or use "
                        "trainer.precision=32-true.")
    # Validating at epoch ends, the checkpoints are written there too, after the MLflow callback has
    # logged the epoch (Lightning's own choice whenever validation skips epochs would be right after
    # validation, before it). Mid-epoch validations (val_check_interval) are left to Lightning.
    at_epoch_end = True if isinstance(t.val_check_interval, float) and t.val_check_interval == 1.0 else None
    # best.ckpt is ranked only in the epochs that validate: in the others val/acc is the last one's.
    best = RelocatableCheckpoint(dirpath=run_dir.checkpoints, filename="best", monitor="val/acc", mode="max",
                                 every_n_epochs=t.check_val_every_n_epoch, save_on_train_epoch_end=at_epoch_end,
                                 enable_version_counter=False)
    # last.ckpt after every epoch, for resuming. Not `save_last=True` on the one above: that writes
    # last.ckpt only in epochs where best.ckpt improved, so a resume could repeat several epochs.
    latest = RelocatableCheckpoint(dirpath=run_dir.checkpoints, filename="last", monitor=None, save_top_k=1,
                                   save_on_train_epoch_end=at_epoch_end, enable_version_counter=False)
    trainer = pl.Trainer(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=mode,
        gradient_clip_val=t.gradient_clip_val or None,
        accumulate_grad_batches=t.accumulate_grad_batches,
        limit_train_batches=t.limit_train_batches,
        val_check_interval=t.val_check_interval,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        logger=False,
        callbacks=[*callbacks, PlateauStepOnResume(), best, latest],
        plugins=[SafeCheckpointIO()],
        profiler=NoProfiler(),
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=run_dir.path,
    )
    return trainer, best


def quiet_lightning() -> None:
    """Drop Lightning's advertising and hints that do not apply to jobs started by Snakemake or SLURM."""
    warnings.filterwarnings("ignore", message=".*`srun` command is available.*")  # started srun-less on purpose
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # an internal deprecation inside Lightning
    # Under DDP every process evaluates the whole val/test set, so their metrics need no syncing.
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
    # The batches are index slices of tensors already in memory: there are no loader workers to add.
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
        lambda record: not str(record.msg).startswith("💡 Tip")
    )
