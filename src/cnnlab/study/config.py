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
from cnnlab.padding import PADDING_MODES


@dataclass
class RunInfo:
    study: str = "adhoc"
    variant: str = "adhoc"
    dir: str = "results/adhoc/runs/adhoc/seed0"  # under -m: each job's folder in Hydra's sweep folder
    tuned: str = ""  # the tuning study's chosen values (JSON, see cnnlab.study.tuning); empty: the config's own
    sweep: str = ""  # the sweep folder of a run started by `cnnlab-train -m` (MLflow tag cnnlab.sweep)


@dataclass
class DataConfig:
    arrays: str = "results/data/cifar10.npz"
    normalize: str = "unit"  # unit: pixels / 255; zscore: per-channel (x - mean) / std of the training split
    train_images: int = 0  # use only the first N shuffled training images per epoch (0 = all)
    # Train on a fixed subset of N training images (0 = all), the same N whatever the variant or the
    # run's seed: a data-limited regime (cnnlab.data.subset). Validation and test stay whole.
    train_subset: int = 0
    train_subset_seed: int = 0  # which subset: its own seed, not the run's
    train_probe_images: int = 2000  # training images scored in eval mode each epoch (train/validation gap)


@dataclass
class AugmentConfig:
    translate: int = 0  # largest random shift in pixels, each axis (0 = off)
    padding_mode: str = "zeros"  # what fills the border a shift uncovers: one of cnnlab.padding.PADDING_MODES
    flip: bool = False  # random horizontal flip
    cutout: int = 0  # side of a random square set to zero (0 = off)


@dataclass
class LookaheadConfig:
    every: int = 0  # optimizer steps between lookahead averages (0: off); see cnnlab/optim/lookahead.py
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
    # Lightning's name, on any device. auto: bf16-mixed on a GPU with bf16; on the CPU bf16-mixed where
    # it has native bf16 and a probe finds it faster for the family, else 32-true (cnnlab.study.precision).
    precision: str = "auto"
    channels_last: str = "auto"  # auto (convolutional networks), true or false
    compile: bool = False
    threads: int = 0  # torch threads on the CPU (0 = as the environment says)
    # CPU: values below 1.2e-38 (denormals) count as zero. Arithmetic on them is several times
    # slower, and Adam's moments of weights that stop getting gradients decay into them (docs/benchmarks.md).
    flush_denormal: bool = True
    nan_check_every: int = 50  # optimizer steps between checks that the loss is finite
    if_loss_diverges: str = "fail"  # fail: the job fails; record: it ends with a DIVERGED result (sweeps)
    # Lightning's own flags, passed as they are (see pytorch_lightning.Trainer).
    gradient_clip_val: float = 0.0  # 0: no clipping
    accumulate_grad_batches: int = 1
    limit_train_batches: Any = 1.0  # a fraction of the batches (float) or a count (int)
    val_check_interval: Any = 1.0  # validate every fraction of an epoch (float) or every N batches (int)
    # Validate (and probe the training images) after every Nth epoch only; max_epochs must be a
    # multiple, so that the last epoch is validated. The epochs between still log their training metrics.
    check_val_every_n_epoch: int = 1
    test_flip_tta: bool = False  # test on the mean of the logits of each image and its mirror
    progress_bar: bool = True


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str = ""  # empty: MLFLOW_TRACKING_URI, else sqlite:///results/mlflow.db
    experiment: str = ""  # empty: the study's name
    timeout_s: int = 20  # how long an unreachable tracking server may stall a job
    retry_s: int = 120  # how long a failing store (locked, down, full) is retried before the job fails, s
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
    schedule: Any = field(default_factory=dict)  # conf/schedule: a cnnlab.optim.schedules function and its numbers
    lookahead: LookaheadConfig = field(default_factory=LookaheadConfig)
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


# Settings whose value must be one of a few words; checked after composition.
CHOICES = {
    "data.normalize": ("unit", "zscore"),
    "augment.padding_mode": PADDING_MODES,
    "trainer.precision": ("auto", "32-true", "bf16-mixed", "16-mixed", "64-true"),
    "trainer.channels_last": ("auto", "true", "false"),
    "trainer.if_loss_diverges": ("fail", "record"),
}

# Lightning's own words: the common ones are accepted at once; any other is looked up in Lightning's
# registries (importing Lightning costs seconds, too much for every Snakemake start).
COMMON_ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
COMMON_STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_fork", "single_device", "fsdp", "deepspeed")


def lightning_choices(key: str) -> tuple[str, ...]:
    if key == "trainer.accelerator":
        from pytorch_lightning.accelerators import AcceleratorRegistry

        return ("auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators()))
    from pytorch_lightning.strategies import StrategyRegistry

    return ("auto", *StrategyRegistry.available_strategies())


# Numbers with a range: key -> (lowest, highest or None, what is allowed, in words). A bound in
# OPEN_BOUNDS is excluded. The schema already makes them numbers of the right type.
RANGES = {
    "seed": (0, 2**32 - 1, "a whole number from 0 to 4294967295 (numpy's seed range)"),
    "trainer.max_epochs": (1, None, "a whole number of at least 1"),
    "trainer.batch_size": (1, None, "a whole number of at least 1"),
    "trainer.eval_batch_size": (1, None, "a whole number of at least 1"),
    "trainer.accumulate_grad_batches": (1, None, "a whole number of at least 1"),
    "trainer.check_val_every_n_epoch": (1, None, "a whole number of epochs, at least 1"),
    "trainer.devices": (1, None, "a whole number of at least 1"),
    "trainer.num_nodes": (1, None, "a whole number of at least 1"),
    "trainer.threads": (0, None, "0 (as the environment says) or a positive number of threads"),
    "trainer.nan_check_every": (1, None, "a whole number of optimizer steps, at least 1"),
    "trainer.gradient_clip_val": (0, None, "0 (no clipping) or a positive number"),
    "data.train_images": (0, None, "0 (all of them) or a positive number of images"),
    "data.train_subset": (0, None, "0 (all of them) or a positive number of images"),
    "data.train_subset_seed": (0, 2**32 - 1, "a whole number from 0 to 4294967295"),
    "data.train_probe_images": (0, None, "0 (none) or a positive number of images"),
    "augment.translate": (0, 31, "a shift in pixels from 0 (off) to 31"),
    "augment.cutout": (0, 32, "a square side in pixels from 0 (off) to 32"),
    "lookahead.every": (0, None, "0 (off) or a positive number of optimizer steps"),
    "lookahead.decay": (0, 1, "a number from 0 to 1"),
    "regularization.l1": (0, None, "0 (off) or a positive number"),
    "regularization.l2": (0, None, "0 (off) or a positive number"),
    "regularization.label_smoothing": (0, 1, "a number from 0 up to, not including, 1"),
    "tracking.timeout_s": (1, None, "a whole number of seconds, at least 1"),
    "tracking.retry_s": (0, None, "a whole number of seconds, 0 or more"),
}
OPEN_BOUNDS = {("regularization.label_smoothing", "high")}
# Lightning's fraction-or-count flags: a float in (0, 1] or a whole number of at least 1.
FRACTION_OR_COUNT = ("trainer.limit_train_batches", "trainer.val_check_interval")


def _check_range(key: str, value) -> None:
    low, high, allowed = RANGES[key]
    too_low = value < low or ((key, "low") in OPEN_BOUNDS and value == low)
    too_high = high is not None and (value > high or ((key, "high") in OPEN_BOUNDS and value == high))
    if too_low or too_high:
        raise UserError(f"'{key}' must be {allowed}, not {value}.")


def _check_fraction_or_count(key: str, value) -> None:
    ok = (isinstance(value, bool) is False and isinstance(value, int) and value >= 1) or (
        isinstance(value, float) and 0 < value <= 1)
    if not ok:
        raise UserError(
            f"'{key}' must be a fraction above 0 and at most 1 (of the batches) or a whole number of batches "
            f"of at least 1, not {value!r}."
        )


def check_known_keys(cfg: DictConfig) -> None:
    """Keys added with `+key=value` that the schema does not know (a typo Hydra would accept)."""
    schema = OmegaConf.structured(RunConfig)

    def walk(node, ref, prefix: str) -> None:
        for key in node.keys():
            full = f"{prefix}{key}"
            if key not in ref:
                raise UserError(
                    f"Unknown config key '{full}'; valid keys there: {', '.join(sorted(map(str, ref.keys())))}."
                )
            child, child_ref = node[key], ref[key]
            # `model`, `optimizer`, `schedule` are _target_ configs (Any): their keys are checked
            # against the class they name instead.
            if isinstance(child, DictConfig) and isinstance(child_ref, DictConfig) and len(child_ref):
                walk(child, child_ref, f"{full}.")

    walk(cfg, schema, "")


def check_accelerator(cfg: DictConfig, gpus: int) -> None:
    """The accelerator must exist on this machine (gpus: how many GPUs it has), enough for trainer.devices."""
    name = cfg.trainer.accelerator
    if name in ("auto", "cpu"):
        return
    if name not in ("gpu", "cuda"):  # mps, tpu, ...: Lightning knows whether this machine has one
        from pytorch_lightning.accelerators import AcceleratorRegistry

        if not AcceleratorRegistry[name]["accelerator"].is_available():
            raise UserError(
                f"trainer.accelerator={name} needs a {name} device and this machine has none; use "
                "trainer.accelerator=auto (a GPU when there is one) or trainer.accelerator=cpu."
            )
        return
    if gpus == 0:
        raise UserError(
            f"trainer.accelerator={name} needs a GPU and this machine has none; use trainer.accelerator=auto "
            "(a GPU when there is one) or trainer.accelerator=cpu."
        )
    if cfg.trainer.devices > gpus:
        raise UserError(
            f"trainer.devices={cfg.trainer.devices} asks for more GPUs than this machine has ({gpus}); "
            f"use trainer.devices={gpus} or fewer."
        )


def _check_validated_at_the_end(t) -> None:
    """The last epoch is validated: the best checkpoint can be the final weights, and the run's last
    validation and train probe (its train/validation gap) are those of the network it ends with."""
    if t.max_epochs % t.check_val_every_n_epoch:
        raise UserError(
            f"trainer.max_epochs={t.max_epochs} is not a multiple of trainer.check_val_every_n_epoch="
            f"{t.check_val_every_n_epoch}, so the last epoch would not be validated; make max_epochs a multiple "
            "of it, or set trainer.check_val_every_n_epoch=1."
        )


def _check_no_credentials(uri: str) -> None:
    """A config file is copied into every run's folder and MLflow run: it must not hold a password.

    (cnnlab-train moves the credentials of a tracking.uri on its command line into MLflow's variables.)
    """
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.password is not None or (parts.scheme in ("http", "https") and "@" in parts.netloc):
        raise UserError(
            "tracking.uri in a config file names a user or password; set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD instead and leave them out of the URI."
        )


def validate(cfg: DictConfig) -> DictConfig:
    """Check every setting that composition cannot; raise UserError naming a bad one."""
    from cnnlab.models import check_model_config
    from cnnlab.optim.optimizers import check_optimization

    check_known_keys(cfg)
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
    for key, common in (("trainer.accelerator", COMMON_ACCELERATORS), ("trainer.strategy", COMMON_STRATEGIES)):
        value = str(OmegaConf.select(merged, key))
        if value not in common and value not in (allowed := lightning_choices(key)):
            raise UserError(f"Unknown value '{value}' for '{key}'; valid choices: {', '.join(allowed)}.")
    for key in RANGES:
        _check_range(key, OmegaConf.select(merged, key))
    for key in FRACTION_OR_COUNT:
        _check_fraction_or_count(key, OmegaConf.select(merged, key))
    _check_validated_at_the_end(merged.trainer)
    _check_no_credentials(merged.tracking.uri)
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
