"""The typed schema of one training run's config, and the checks Hydra cannot express.

Hydra composes `conf/`; the result is merged into these dataclasses so that a wrong type or an
unknown key fails before any work starts, with one sentence naming the bad value.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from cnnlab.errors import UserError


@dataclass
class RunInfo:
    study: str = "adhoc"
    variant: str = "adhoc"
    dir: str = "results/adhoc/runs/adhoc/seed0"


@dataclass
class DataConfig:
    arrays: str = "results/data/cifar10.npz"
    normalize: str = "unit"  # unit: pixels / 255; zscore: per-channel (x - mean) / std of the training split
    train_images: int = 0  # use only the first N shuffled training images per epoch (0 = all)
    device_resident: bool = True  # keep the whole data set on the training device


@dataclass
class AugmentConfig:
    translate: int = 0  # largest random shift in pixels, each axis (0 = off)
    padding_mode: str = "zeros"  # what fills the border a shift uncovers: zeros, replicate, circular
    flip: bool = False  # random horizontal flip
    cutout: int = 0  # side of a random square set to zero (0 = off)


@dataclass
class ModelConfig:
    family: str = "mlp"  # mlp, cnn or fastcnn
    hidden: list[int] = field(default_factory=lambda: [512, 256])  # fully connected hidden sizes
    activation: str = "relu"
    batch_norm: bool = False
    dropout: float = 0.0
    # convolution blocks (cnn): conv -> [bn] -> activation -> pool -> [dropout], one per entry
    channels: list[int] = field(default_factory=list)
    kernel_size: int = 3
    stride: int = 1
    padding: int = 1
    padding_mode: str = "zeros"
    pool: str = "max"  # max, avg or none
    pool_size: int = 2
    pool_stride: int = 2
    width: int = 64  # fastcnn: channels of the first block (doubled per block)


@dataclass
class OptimizerConfig:
    name: str = "sgd"  # sgd, adam or adamw
    lr: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    lookahead_every: int = 0  # optimizer steps between lookahead averages (0: off); see cnnlab/lookahead.py
    lookahead_decay: float = 0.95  # per-step decay of the average; an update keeps up to decay ** every


@dataclass
class ScheduleConfig:
    name: str = "constant"  # constant, step, cosine, onecycle, plateau
    step_size: int = 10  # step: epochs between decays
    gamma: float = 0.1  # step: decay factor
    pct_start: float = 0.25  # onecycle: fraction of steps spent warming up
    factor: float = 0.5  # plateau: decay factor
    patience: int = 2  # plateau: epochs without val/acc gain before a decay


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
    channels_last: str = "auto"  # auto, true or false
    compile: bool = False
    threads: int = 0  # torch threads on the CPU (0 = as the environment says)
    nan_check_every: int = 50  # optimizer steps between checks that the loss is finite
    steps_per_call: int = 16  # optimizer steps per training_step call: same updates, less overhead
    test_flip_tta: bool = False  # test on the mean of the logits of each image and its mirror
    progress_bar: bool = True


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str = ""  # empty: MLFLOW_TRACKING_URI, else sqlite:///results/mlflow.db
    experiment: str = ""  # empty: the study's name
    log_checkpoint: bool = True
    timeout_s: int = 20  # how long an unreachable tracking server may stall a job


@dataclass
class RunConfig:
    seed: int = 0
    run: RunInfo = field(default_factory=RunInfo)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


# Settings whose value must be one of a few words; checked after composition.
CHOICES = {
    "data.normalize": ("unit", "zscore"),
    "augment.padding_mode": ("zeros", "replicate", "circular"),
    "model.family": ("mlp", "cnn", "fastcnn"),
    "model.activation": ("relu", "gelu", "tanh", "sigmoid", "leaky_relu"),
    "model.padding_mode": ("zeros", "replicate", "circular"),
    "model.pool": ("max", "avg", "none"),
    "optimizer.name": ("sgd", "adam", "adamw"),
    "schedule.name": ("constant", "step", "cosine", "onecycle", "plateau"),
    "trainer.precision": ("auto", "32-true", "bf16-mixed", "16-mixed", "64-true"),
    "trainer.channels_last": ("auto", "true", "false"),
}

# Counts that must be at least 1 (the schema already makes them integers).
POSITIVE = ("trainer.max_epochs", "trainer.batch_size", "trainer.eval_batch_size", "trainer.steps_per_call")


def validate(cfg: DictConfig) -> DictConfig:
    """Check the settings that take one of a few words, and the counts; raise UserError naming a bad one."""
    merged = cfg.copy()
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
    OmegaConf.set_readonly(merged, True)
    return merged


def parent_keys(full_key: str) -> list[str]:
    node = OmegaConf.structured(RunConfig)
    for part in full_key.split(".")[:-1]:
        if part in node:
            node = node[part]
    return sorted(node.keys()) if isinstance(node, DictConfig) else []


# Settings that change what a run computes; paths, tracking, threads, the progress bar and the
# steps per training_step call (the same updates either way) do not.
NOT_FINGERPRINTED = (
    "run", "tracking", "trainer.progress_bar", "trainer.threads", "trainer.steps_per_call", "data.arrays",
)


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
