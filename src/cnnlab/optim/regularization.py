"""The lecture's L1 and L2 penalties, added to the loss (not the optimizer's weight decay).

Both sum over weight matrices and convolution kernels only: biases and normalization scales are
left alone, as the lecture's definitions penalize the magnitudes of the connections.
"""

from __future__ import annotations

import torch
from torch import nn

PENALIZED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def penalized_weights(net: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in net.modules() if isinstance(m, PENALIZED) and m.weight.requires_grad]


def l1_penalty(weights: list[torch.Tensor], out: list[torch.Tensor] | None = None) -> torch.Tensor:
    """sum |w| over all given weights; with out (a tensor like each weight), |w| is written there."""
    outs = out or [None] * len(weights)
    return torch.stack([torch.abs(w, out=o).sum() for w, o in zip(weights, outs, strict=True)]).sum()


def l2_penalty(weights: list[torch.Tensor], out: list[torch.Tensor] | None = None) -> torch.Tensor:
    """sum w^2 over all given weights; with out (a tensor like each weight), w^2 is written there."""
    outs = out or [None] * len(weights)
    return torch.stack([torch.pow(w, 2, out=o).sum() for w, o in zip(weights, outs, strict=True)]).sum()


class DirectPenalties:
    """The penalties' values for the loss, and their gradients added to the weights' own after
    the backward pass of the rest of the loss, in place of autograd's.

    Autograd's way allocates several weight-sized tensors per step (|w| and w^2 forward; sign,
    products and a sum backward), each a fresh allocation the operating system zero-fills: for the
    MLP's 1.7 M weights that cost about 3 s an epoch per penalty on one CPU thread. Here the same
    arithmetic runs in two buffers kept from step to step, and gives the same bits: autograd's
    gradient of l1 * sum|w| is l1 * sign(w), that of l2 * sum w^2 is l2 * (2 w), and it sums a
    weight's incoming gradients as (l2 term + l1 term) + cross-entropy term, which is what adding
    the two terms' sum to the cross-entropy gradient gives (one addition, commutative).
    Exact only when each backward pass's gradient is the whole step's (no accumulation over
    batches, one process, no loss scaling): `applies` says whether a trainer is such a case.
    """

    def __init__(self, weights: list[torch.Tensor], l1: float, l2: float):
        self.weights, self.l1, self.l2 = weights, l1, l2
        self._buffers: list[tuple[torch.Tensor, torch.Tensor]] = []

    @staticmethod
    def applies(accumulate_grad_batches: int, world_size: int, precision: str) -> bool:
        return accumulate_grad_batches == 1 and world_size == 1 and precision == "32-true"

    def _scratch(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if not self._buffers or any(a.shape != w.shape or a.stride() != w.stride() or a.device != w.device
                                    for (a, _), w in zip(self._buffers, self.weights, strict=True)):
            self._buffers = [(torch.empty_like(w), torch.empty_like(w)) for w in self.weights]
        return self._buffers

    @torch.no_grad()
    def values(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """l1 * sum|w| and l2 * sum w^2 (None for a weight of 0), by l1_penalty and l2_penalty in the buffers."""
        scratch = self._scratch()
        l1 = self.l1 * l1_penalty(self.weights, [a for a, _ in scratch]) if self.l1 > 0 else None
        l2 = self.l2 * l2_penalty(self.weights, [b for _, b in scratch]) if self.l2 > 0 else None
        return l1, l2

    @torch.no_grad()
    def add_gradients(self) -> None:
        for w, (a, b) in zip(self.weights, self._scratch(), strict=True):
            term = None
            if self.l2 > 0:
                term = torch.mul(w, 2.0, out=b).mul_(self.l2)
            if self.l1 > 0:
                sign = torch.sign(w, out=a).mul_(self.l1)
                term = sign if term is None else term.add_(sign)
            if term is None:
                continue
            if w.grad is None:
                w.grad = term.clone()
            else:
                w.grad.add_(term)
