"""Lookahead weight averaging, as the CIFAR-10 speed records use it (KellerJordan/cifar10-airbench).

Every `every` optimizer steps the network's floating-point state (weights and batch-norm
statistics) is pulled into an exponential moving average, and the average is copied back into the
network. The averaging strength grows with the cube of training progress, from none at the start
to `decay ** every` at the end, and the last step averages too, so the run ends on the average:
early training moves freely, late training settles on a smoothed point.
"""

from __future__ import annotations

import torch


class Lookahead:
    def __init__(self, net: torch.nn.Module, every: int, decay: float, total_steps: int):
        self.net, self.every, self.decay, self.total_steps = net, every, decay, max(1, total_steps)
        self.average = {k: v.detach().clone() for k, v in net.state_dict().items() if v.is_floating_point()}

    def strength(self, step: int) -> float:
        """How much of the average an update keeps at optimizer step `step` (0: none)."""
        return self.decay**self.every * (step / self.total_steps) ** 3

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """Call after optimizer step number `step` (counted from 1)."""
        # The last step always averages, so the run ends on an average that has its final weights
        # in it, however the step count divides.
        if step % self.every == 0 or step >= self.total_steps:
            self._update(self.strength(step))

    def _update(self, keep: float) -> None:
        state = self.net.state_dict()
        for name, avg in self.average.items():
            current = state[name]
            avg.lerp_(current, 1 - keep)
            current.copy_(avg)

    def state_dict(self) -> dict:
        return {"average": self.average}

    def load_state_dict(self, state: dict) -> None:
        for name, value in state["average"].items():
            self.average[name].copy_(value)
