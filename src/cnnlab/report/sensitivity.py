"""Problema 2: how test accuracy falls when the objects move or change size.

Each test image is shifted by s pixels in one of the four axis directions (a fixed, seeded choice
per image, so every shift moves the same image the same way), filling the uncovered border per
padding mode; or rescaled about its centre with bilinear sampling and a black (zero) border.
Both act on the uint8 pixels, before the network's own normalization, so "zero" means black.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from cnnlab.data.augment import random_translate
from cnnlab.padding import PADDING_MODES
from cnnlab.report.networks import TrainedNet

SHIFTS = tuple(range(0, 9))  # pixels
SCALES = tuple(np.round(np.linspace(0.75, 1.25, 11), 3))  # 1.0 in the middle


def directions(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit steps (dy, dx) per image, each one of up, down, left, right."""
    choice = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(seed))
    dy = torch.tensor([-1, 1, 0, 0])[choice]
    dx = torch.tensor([0, 0, -1, 1])[choice]
    return dy, dx


def rescale(x_uint8: torch.Tensor, factor: float) -> torch.Tensor:
    """Zoom each image (B, C, H, W) by factor about its centre; >1 enlarges, <1 shrinks."""
    b = len(x_uint8)
    theta = torch.tensor([[1 / factor, 0.0, 0.0], [0.0, 1 / factor, 0.0]]).expand(b, 2, 3)
    grid = F.affine_grid(theta, list(x_uint8.shape), align_corners=False)
    out = F.grid_sample(x_uint8.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def accuracy(trained: TrainedNet, x: torch.Tensor, y: torch.Tensor, stats: dict) -> float:
    return float((trained.predict(x, stats) == y).float().mean())


def evaluate(trained: TrainedNet, x: torch.Tensor, y: torch.Tensor, stats: dict) -> pd.DataFrame:
    """Accuracy per (transform, padding mode, amount); the unshifted images once, for every mode."""
    dy, dx = directions(len(x))
    rows = []
    base = accuracy(trained, x, y, stats)
    for mode in PADDING_MODES:
        for s in SHIFTS:
            acc = base if s == 0 else accuracy(trained, random_translate(x, dy * s, dx * s, mode), y, stats)
            rows.append({"transform": "shift", "mode": mode, "amount": float(s), "acc": acc})
    for f in SCALES:
        acc = base if f == 1.0 else accuracy(trained, rescale(x, float(f)), y, stats)
        rows.append({"transform": "scale", "mode": "zeros", "amount": float(f), "acc": acc})
    table = pd.DataFrame(rows)
    table["drop"] = base - table["acc"]  # accuracy points lost against the untouched images
    table["relative_drop"] = table["drop"] / base if base > 0 else np.nan
    return table


def mean_table(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """The mean over several networks' tables (say, one per seed), row by row."""
    keys = ["transform", "mode", "amount"]
    return pd.concat(tables).groupby(keys, sort=False, as_index=False)[["acc", "drop", "relative_drop"]].mean()


def mean_relative_drop(table: pd.DataFrame, transform: str) -> float:
    rows = table[table["transform"] == transform]
    identity = 0.0 if transform == "shift" else 1.0
    return float(rows[rows.amount != identity].relative_drop.mean())
