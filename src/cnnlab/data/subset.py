"""A fixed subset of the training split: the data-limited regime's training set.

`data.train_subset=5000` trains on 5,000 of the training images, chosen by `data.train_subset_seed`
alone: every variant and every run seed of the regime sees the same images, so a paired difference
between two variants is a difference of their methods, not of their data. The subset takes the
classes in turn (500 of each of CIFAR-10's ten classes for 5,000), so no class is short by chance.
Distinct from `data.train_images`, which takes a new random share of the whole split each epoch.
"""

from __future__ import annotations

import torch


def fixed_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Sorted indices of n images of `labels`, the classes taken in turn in an order seeded by `seed`.

    n <= 0 or n >= len(labels): every index.
    """
    total = len(labels)
    if n <= 0 or n >= total:
        return torch.arange(total)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    classes = labels.cpu()[order]
    # Each image's rank within its class in that order; taking images by rank first, then by
    # position, takes one of each class in turn until n are taken.
    rank = torch.empty(total, dtype=torch.long)
    for c in classes.unique():
        members = classes == c
        rank[members] = torch.arange(int(members.sum()))
    key = rank * total + torch.arange(total)
    return order[torch.argsort(key)[:n]].sort().values
