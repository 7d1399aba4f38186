"""Learning-rate schedules: one function each, called once by the module to build it.

`conf/schedule/<name>.yaml` names its function with `_target_` (and `_partial_: true`) and sets
every number the schedule uses. The module calls it with the optimizer, the run's epochs and its
optimizer steps per epoch, and hands the result to Lightning, which steps the scheduler: after
every optimizer step (`interval: step`), after every epoch (`interval: epoch`), or after every
validation with the monitored metric (plateau). The optimizer's `lr` is the schedule's base rate
(for one-cycle, its peak).
"""

from __future__ import annotations

from torch.optim import Optimizer, lr_scheduler


def constant(optimizer: Optimizer, epochs: int, steps_per_epoch: int) -> None:
    """The rate never changes: no scheduler at all."""
    return None


def step(optimizer: Optimizer, epochs: int, steps_per_epoch: int, step_size: int, gamma: float) -> dict:
    """Multiply the rate by gamma every step_size epochs."""
    return {"scheduler": lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma), "interval": "epoch"}


def cosine(optimizer: Optimizer, epochs: int, steps_per_epoch: int, final_lr: float = 0.0) -> dict:
    """Cosine decay from the base rate at the first epoch to final_lr after the last."""
    return {"scheduler": lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=final_lr), "interval": "epoch"}


def plateau(optimizer: Optimizer, epochs: int, steps_per_epoch: int, monitor: str, mode: str, factor: float,
            patience: int) -> dict:
    """Multiply the rate by factor when `monitor` has not improved for `patience` validations."""
    scheduler = lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=factor, patience=patience)
    return {"scheduler": scheduler, "interval": "epoch", "monitor": monitor, "strict": True}


def one_cycle(optimizer: Optimizer, epochs: int, steps_per_epoch: int, warmup_fraction: float, start_div: float,
              final_div: float, cycle_momentum: bool) -> dict:
    """Warm up from lr / start_div to the optimizer's lr over warmup_fraction of all steps, then
    anneal (cosine) to lr / (start_div * final_div); stepped after every optimizer step."""
    peak = [group["lr"] for group in optimizer.param_groups]
    scheduler = lr_scheduler.OneCycleLR(
        optimizer, max_lr=peak, total_steps=max(1, epochs * steps_per_epoch), pct_start=warmup_fraction,
        div_factor=start_div, final_div_factor=final_div, cycle_momentum=cycle_momentum,
    )
    return {"scheduler": scheduler, "interval": "step"}
