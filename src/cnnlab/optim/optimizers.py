"""The optimizer and its learning-rate schedule, built from `conf/optimizer` and `conf/schedule`.

The optimizer config names a `torch.optim` class (`_target_`) and its arguments; the schedule
config names a function of `cnnlab.optim.schedules` (or any function with its signature) and its numbers.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer

from cnnlab.errors import UserError
from cnnlab.targets import arguments, check_arguments, one_line


def build_optimizer(optimizer_cfg, params) -> Optimizer:
    return check_arguments(optimizer_cfg, "optimizer", supplied=("params",))(params, **arguments(optimizer_cfg))


def build_schedule(schedule_cfg, optimizer: Optimizer, epochs: int, steps_per_epoch: int) -> dict | None:
    """Lightning's lr_scheduler entry ({'scheduler', 'interval', ...}), or None for a constant rate."""
    build = check_arguments(schedule_cfg, "schedule", supplied=("optimizer", "epochs", "steps_per_epoch"))
    return build(optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch, **arguments(schedule_cfg))


def check_optimization(cfg) -> None:
    """Build both on a stand-in parameter, so a bad value fails now, in one sentence, not in a job."""
    try:
        optimizer = build_optimizer(cfg.optimizer, [torch.zeros(1, requires_grad=True)])
    except (ValueError, TypeError) as e:
        raise UserError(f"Bad optimizer config: {one_line(e)}") from None
    try:
        build_schedule(cfg.schedule, optimizer, cfg.trainer.max_epochs, steps_per_epoch=10)
    except (ValueError, TypeError) as e:
        raise UserError(f"Bad schedule config: {one_line(e)}") from None
