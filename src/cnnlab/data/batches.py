"""The data set in memory as tensors, batched by index slices, augmented per batch.

Replaces a DataLoader: no per-sample Python, no worker processes. The order and the augmentation
of epoch e with seed s come from a generator seeded with (s, e) alone, so a run resumed at epoch e
sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import math

import torch

from cnnlab.data.augment import bounded_shifts, cutout, pad_images, random_flip, shifted_images


def normalize(images: torch.Tensor, mean: list[float] | None, std: list[float] | None) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 on [0, 1], then z-scored per channel when mean/std are given.

    Also takes the float32 [0, 1] images this gives without mean/std (the warm process's shared
    copy, cnnlab.data.datamodule.preload): they are returned as they are, or z-scored into a new tensor
    to the same last bit as from the uint8 images, since the same operations meet the same values."""
    scaled = images.dtype == torch.float32
    if scaled and mean is None:
        return images
    x = torch.empty(images.shape, dtype=torch.float32, device=images.device)
    m = s = None
    if mean is not None:
        m = torch.tensor(mean, dtype=x.dtype, device=x.device)[None, :, None, None]
        s = torch.tensor(std, dtype=x.dtype, device=x.device)[None, :, None, None]
    # In slices of 256 images (3 MiB of float32): each slice stays in cache through its four passes,
    # and the data set is written once, not copied per operation.
    for i in range(0, len(x), 256):
        xi = x[i : i + 256]
        xi.copy_(images[i : i + 256])
        if not scaled:
            xi.div_(255.0)
        if m is not None:
            xi.sub_(m).div_(s)
    return x


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # A large odd multiplier keeps (seed, epoch) pairs from colliding for any realistic run.
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class TrainBatches:
    """Iterable of augmented (x, y) training batches; Lightning calls set_epoch before each epoch."""

    def __init__(self, x, y, batch_size: int, seed: int, augment, limit: int = 0, channels_last: bool = False):
        self.x, self.y = x, y  # (N, C, H, W) float, (N,) int64, on the training device
        self.batch_size = batch_size
        self.seed = seed
        self.augment = augment
        self.limit = limit or len(y)
        self.channels_last = channels_last
        self.epoch = 0
        self.rank, self.world = 0, 1
        self.sampler = self  # Lightning looks for `sampler.set_epoch` on a loader
        # Translated batches are cut straight out of the data set padded once here, (N, C, H + 2t, W + 2t):
        # one gather per batch instead of select, pad and shift, for 1.6x the memory of x (t = 4).
        self.pad = min(augment.translate, max(x.shape[-2:])) if augment.translate else 0
        self.padded = pad_images(x, self.pad, augment.padding_mode) if self.pad else None

    def shard(self, rank: int, world: int) -> None:
        """Under DDP each process takes every world-th batch of the same epoch order."""
        self.rank, self.world = rank, world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _starts(self) -> range:
        starts = range(0, min(self.limit, len(self.y)), self.batch_size)
        # Every process must take the same number of steps, or DDP waits forever on the last one.
        return starts[: len(starts) // self.world * self.world][self.rank :: self.world]

    def __len__(self) -> int:
        return len(self._starts())

    def __iter__(self):
        g = epoch_generator(self.seed, self.epoch)
        n = len(self.y)
        dev = self.x.device
        # All of an epoch's random numbers are drawn at once, on the CPU, then moved in one copy.
        order = torch.randperm(n, generator=g)[: self.limit]
        a = self.augment
        t = a.translate
        dy = torch.randint(-t, t + 1, (n,), generator=g) if t else None
        dx = torch.randint(-t, t + 1, (n,), generator=g) if t else None
        flip = torch.rand(n, generator=g) < 0.5 if a.flip else None
        cy = torch.randint(0, self.x.shape[-2], (n,), generator=g) if a.cutout else None
        cx = torch.randint(0, self.x.shape[-1], (n,), generator=g) if a.cutout else None
        if t:
            dy, dx = bounded_shifts(dy, dx, *self.x.shape[-2:], a.padding_mode)
        order = order.to(dev)
        dy, dx, flip, cy, cx = (v.to(dev) if v is not None else None for v in (dy, dx, flip, cy, cx))
        for start in self._starts():
            idx = order[start : start + self.batch_size]
            yb = self.y.index_select(0, idx)
            if t:
                xb = shifted_images(self.padded, idx, dy[idx], dx[idx], self.pad)
            else:
                xb = self.x.index_select(0, idx)  # faster than x[idx] on the CPU
            if a.flip:
                xb = random_flip(xb, flip[idx], out=xb)  # xb is this batch's own copy: mirror in place
            if a.cutout:
                xb = cutout(xb, cy[idx], cx[idx], a.cutout)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb


class EvalBatches:
    """Iterable of (x, y) batches in order, for validation and test."""

    def __init__(self, x, y, batch_size: int, channels_last: bool = False):
        self.x, self.y, self.batch_size, self.channels_last = x, y, batch_size, channels_last

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.y), self.batch_size):
            xb = self.x[start : start + self.batch_size]
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, self.y[start : start + self.batch_size]
