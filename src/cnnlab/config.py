"""The typed schema of one training run's config, and the checks Hydra cannot express.

Hydra composes `conf/`; the result is merged into these dataclasses so that a wrong type or an
unknown key fails before any work starts, with one sentence naming the bad value. The groups
that grow (`model`, `optimizer`, `schedule`) are `_target_` configs: their keys are checked
against what they instantiate (`validate`), not listed here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cnnlab.errors import UserError


@dataclass
class RunInfo:
    study: str = "adhoc"
    variant: str = "adhoc"
    dir: str = "results/adhoc/runs/adhoc/seed0"  # under -m: each job's folder in Hydra's sweep folder
    learning_rates: str = ""  # a sweep's chosen rates (JSON, see cnnlab.tuning); empty: the config's own
    sweep: str = ""  # the sweep folder of a run started by `cnnlab-train -m` (MLflow tag cnnlab.sweep)


@dataclass
class DataConfig:
    arrays: str = "results/data/cifar10.npz"
    normalize: str = "unit"  # unit: pixels / 255; zscore: per-channel (x - mean) / std of the training split
    train_images: int = 0  # use only the first N shuffled training images per epoch (0 = all)
    device_resident: bool = True  # keep the whole data set on the training device
    train_probe_images: int = 2000  # training images scored in eval mode each epoch (train/validation gap)


@dataclass
class AugmentConfig:
    translate: int = 0  # largest random shift in pixels, each axis (0 = off)
    padding_mode: str = "zeros"  # what fills the border a shift uncovers: zeros, replicate, circular
    flip: bool = False  # random horizontal flip
    cutout: int = 0  # side of a random square set to zero (0 = off)


@dataclass
class LookaheadConfig:
    every: int = 0  # optimizer steps between lookahead averages (0: off); see cnnlab/lookahead.py
    decay: float = 0.95  # per-step decay of the average; an update keeps up to decay ** every


@dataclass
class RegularizationConfig:
    l1: float = 0.0  # lambda1 in lambda1 * sum|w| over weight matrices and kernels
    l2: float = 0.0  # lambda2 in lambda2 * sum w^2 over the same weights
    label_smoothing: float = 0.0


@dataclass
class TrainerConfig:
    max_epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 1000
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"  # auto: bf16-mixed on a GPU, 32-true on the CPU
    channels_last: str = "auto"  # auto (convolutional networks on a GPU), true or false
    compile: bool = False
    threads: int = 0  # torch threads on the CPU (0 = as the environment says)
    nan_check_every: int = 50  # optimizer steps between checks that the loss is finite
    if_loss_diverges: str = "fail"  # fail: the job fails; record: it ends with a DIVERGED result (sweeps)
    # Lightning's own flags, passed as they are (see pytorch_lightning.Trainer).
    gradient_clip_val: float = 0.0  # 0: no clipping
    accumulate_grad_batches: int = 1
    limit_train_batches: Any = 1.0  # a fraction of the batches (float) or a count (int)
    val_check_interval: Any = 1.0  # validate every fraction of an epoch (float) or every N batches (int)
    test_flip_tta: bool = False  # test on the mean of the logits of each image and its mirror
    progress_bar: bool = True


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str = ""  # empty: MLFLOW_TRACKING_URI, else sqlite:///results/mlflow.db
    experiment: str = ""  # empty: the study's name
    log_checkpoint: bool = True
    timeout_s: int = 20  # how long an unreachable tracking server may stall a job
    # Seconds between samples of CPU, memory and GPU use (MLflow's system metrics); 0: none.
    # Each sample is a few reads of /proc and NVML plus one small write to the store.
    system_metrics_interval_s: float = 5.0


@dataclass
class RunConfig:
    seed: int = 0
    run: RunInfo = field(default_factory=RunInfo)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: Any = field(default_factory=dict)  # conf/model/<family>.yaml: _target_ and its arguments
    optimizer: Any = field(default_factory=dict)  # conf/optimizer: a torch.optim class and its arguments
    schedule: Any = field(default_factory=dict)  # conf/schedule: a cnnlab.schedules function and its numbers
    lookahead: LookaheadConfig = field(default_factory=LookaheadConfig)
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


# Settings whose value must be one of a few words; checked after composition.
CHOICES = {
    "data.normalize": ("unit", "zscore"),
    "augment.padding_mode": ("zeros", "replicate", "circular"),
    "trainer.precision": ("auto", "32-true", "bf16-mixed", "16-mixed", "64-true"),
    "trainer.channels_last": ("auto", "true", "false"),
    "trainer.if_loss_diverges": ("fail", "record"),
}

# Counts that must be at least 1 (the schema already makes them integers).
POSITIVE = (
    "trainer.max_epochs", "trainer.batch_size", "trainer.eval_batch_size", "trainer.accumulate_grad_batches",
)


def validate(cfg: DictConfig) -> DictConfig:
    """Check every setting that composition cannot; raise UserError naming a bad one."""
    from cnnlab.models import check_model_config
    from cnnlab.optimization import check_optimization

    merged = cfg.copy()
    if merged.seed < 0:
        raise UserError(f"seed must be a non-negative integer, not {merged.seed}.")
    for key, allowed in CHOICES.items():
        value = str(OmegaConf.select(merged, key))
        if value not in allowed and value in ("True", "False"):
            # YAML and Hydra read a bare true/false as a boolean, which a text field stores as "True".
            value = value.lower()
            OmegaConf.update(merged, key, value)
        if value not in allowed:
            raise UserError(
                f"Unknown value '{value}' for '{key}'; valid choices: {', '.join(allowed)}."
            )
    for key in POSITIVE:
        value = OmegaConf.select(merged, key)
        if value < 1:
            raise UserError(f"'{key}' must be at least 1, not {value}; set it to a positive whole number.")
    check_model_config(merged.model)
    check_optimization(merged)
    OmegaConf.set_readonly(merged, True)
    return merged


def parent_keys(full_key: str) -> list[str]:
    node = OmegaConf.structured(RunConfig)
    for part in full_key.split(".")[:-1]:
        if part in node:
            node = node[part]
    return sorted(node.keys()) if isinstance(node, DictConfig) else []


# Settings that change what a run computes; paths, tracking, threads and the progress bar do not.
NOT_FINGERPRINTED = ("run", "tracking", "trainer.progress_bar", "trainer.threads", "data.arrays")


def fingerprint(cfg: DictConfig) -> str:
    """A short hash of what a run computes: equal fingerprints train the same network."""
    c = OmegaConf.to_container(cfg, resolve=True)
    for key in NOT_FINGERPRINTED:
        *parents, leaf = key.split(".")
        node = c
        for p in parents:
            node = node[p]
        node.pop(leaf, None)
    return hashlib.sha256(json.dumps(c, sort_keys=True).encode()).hexdigest()[:16]
