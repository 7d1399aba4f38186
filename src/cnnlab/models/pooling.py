"""Max pooling that skips the argmax indices when nothing will ask for a gradient.

`max_pool2d` on the CPU always computes each window's argmax, which only its backward pass reads.
For the lecture CNN's 2 × 2 windows at stride 2 on a channels-last batch, the element-wise
maximum of the window's four shifted views gives the same values (a maximum is exact: no
rounding) in about half the time on one thread, so validation, testing and the report's
evaluations run faster. Only the sign of a zero maximum may differ, where a window holds both
+0.0 and -0.0; every later sum starts from +0.0 and cannot tell them apart, so a network's
logits are the same to the last bit (tests/test_pooling.py). Training, any other window, layout
or device takes `nn.MaxPool2d`'s path.
"""

from __future__ import annotations

import torch
from torch import nn


class MaxPool2d(nn.MaxPool2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _takes_views(self, x):
            return max_pool_2x2(x)
        return super().forward(x)


def _takes_views(pool: nn.MaxPool2d, x: torch.Tensor) -> bool:
    if x.requires_grad and torch.is_grad_enabled():
        return False
    window = tuple(_pair(v) for v in (pool.kernel_size, pool.stride, pool.padding, pool.dilation))
    if window != ((2, 2), (2, 2), (0, 0), (1, 1)) or pool.ceil_mode or pool.return_indices:
        return False
    return (
        x.device.type == "cpu"
        and x.dim() == 4
        and x.shape[2] % 2 == 0
        and x.shape[3] % 2 == 0
        and x.is_contiguous(memory_format=torch.channels_last)
    )


def _pair(v) -> tuple:
    """nn.MaxPool2d keeps each setting as given: one number for both axes, or one per axis."""
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """Max over 2 × 2 windows at stride 2 of a channels-last (N, C, H, W) batch with even H and W,
    returned channels-last. In memory the batch is (N, H, W, C): horizontal neighbours are
    adjacent blocks of C values, vertical ones adjacent rows."""
    n, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(n, h, w // 2, 2 * c)
    rows = torch.maximum(rows[..., :c], rows[..., c:])  # (N, H, W/2, C)
    pairs = rows.reshape(n, h // 2, 2, w // 2, c)
    return torch.maximum(pairs[:, :, 0], pairs[:, :, 1]).permute(0, 3, 1, 2)
