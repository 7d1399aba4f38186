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


def l1_penalty(weights: list[torch.Tensor]) -> torch.Tensor:
    """sum |w| over all given weights."""
    return torch.stack([w.abs().sum() for w in weights]).sum()


def l2_penalty(weights: list[torch.Tensor]) -> torch.Tensor:
    """sum w^2 over all given weights."""
    return torch.stack([w.pow(2).sum() for w in weights]).sum()
