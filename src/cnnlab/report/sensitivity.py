"""Problema 2: how test accuracy falls when the objects move or change size.

Each test image is shifted by s pixels in one of the four axis directions (a fixed, seeded choice
per image, so every shift moves the same image the same way), filling the uncovered border per
padding mode. Rescaled about its centre: zoomed in by cropping the centre and resizing it back up
(no border at all); zoomed out by resizing the whole image down (antialiased) and padding it back
to its size with each of the lecture's padding modes: black (zeros), the edge pixels (replicate)
or the opposite edge (circular). A black border is an artifact of its own: a network that
averages over positions (a global-average head) averages the border in too, so the claims read
zoom-out from the two modes without black, and the black border is shown beside them.

Each network's score is the accuracy it keeps above chance: (accuracy - chance) / (accuracy on the
untouched images - chance), chance being one in the number of classes. A raw ratio of accuracies
would favour the weaker network, whose accuracy has less room to fall before it reaches chance.
All of it acts on the uint8 pixels, before the network's own normalization, so "zero" is black.
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


ZOOM_IN = "crop"  # the mode of a zoom in: no border to fill
# What the claims average for each transform, per amount: every padding mode for shifts (the lecture's);
# for rescaling the crop and the two zoom-out modes that add no black border.
CLAIM_MODES = {"shift": PADDING_MODES, "scale": (ZOOM_IN, "replicate", "circular")}
TORCH_PAD = {"zeros": "constant", "replicate": "replicate", "circular": "circular"}


def rescale(x_uint8: torch.Tensor, factor: float, mode: str = "zeros") -> torch.Tensor:
    """Zoom each image (B, C, H, W) by factor about its centre. Above 1: the central 1/factor of the image,
    resized up with bilinear sampling (a crop, no border). Below 1: the whole image resized down
    (antialiased) and padded back to its size with `mode`, one of PADDING_MODES. At 1: unchanged."""
    if factor == 1:
        return x_uint8.clone()
    h, w = x_uint8.shape[-2:]
    if factor > 1:
        b = len(x_uint8)
        theta = torch.tensor([[1 / factor, 0.0, 0.0], [0.0, 1 / factor, 0.0]]).expand(b, 2, 3)
        grid = F.affine_grid(theta, list(x_uint8.shape), align_corners=False)
        out = F.grid_sample(x_uint8.float(), grid, mode="bilinear", align_corners=False)  # samples inside only
    else:
        sh, sw = max(1, round(h * factor)), max(1, round(w * factor))
        small = F.interpolate(x_uint8.float(), size=(sh, sw), mode="bilinear", align_corners=False, antialias=True)
        top, left = (h - sh) // 2, (w - sw) // 2
        out = F.pad(small, (left, w - sw - left, top, h - sh - top), mode=TORCH_PAD[mode])
    return out.round().clamp(0, 255).to(torch.uint8)


def accuracy(trained: TrainedNet, x: torch.Tensor, y: torch.Tensor, stats: dict) -> float:
    return float((trained.predict(x, stats) == y).float().mean())


def evaluate(trained: TrainedNet, x: torch.Tensor, y: torch.Tensor, stats: dict) -> pd.DataFrame:
    """Accuracy per (transform, padding mode, amount); the untouched images once, for every mode."""
    dy, dx = directions(len(x))
    rows = []
    base = accuracy(trained, x, y, stats)
    for mode in PADDING_MODES:
        for s in SHIFTS:
            acc = base if s == 0 else accuracy(trained, random_translate(x, dy * s, dx * s, mode), y, stats)
            rows.append({"transform": "shift", "mode": mode, "amount": float(s), "acc": acc})
    for f in SCALES:
        for mode in (PADDING_MODES if f < 1 else (ZOOM_IN,)):
            acc = base if f == 1.0 else accuracy(trained, rescale(x, float(f), mode), y, stats)
            rows.append({"transform": "scale", "mode": mode, "amount": float(f), "acc": acc})
    table = pd.DataFrame(rows)
    chance = 1 / (len(stats.get("classes") or ()) or int(y.max()) + 1)
    table["drop"] = base - table["acc"]  # accuracy points lost against the untouched images
    # The share of the accuracy above chance that is lost: 1 - (acc - chance) / (base - chance).
    table["relative_drop"] = table["drop"] / (base - chance) if base > chance else np.nan
    return table


def mean_table(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """The mean over several networks' tables (say, one per seed), row by row."""
    keys = ["transform", "mode", "amount"]
    return pd.concat(tables).groupby(keys, sort=False, as_index=False)[["acc", "drop", "relative_drop"]].mean()


def mean_relative_drop(table: pd.DataFrame, transform: str, modes=None) -> float:
    """The share of accuracy above chance lost, averaged per amount over `modes` (default: the claims'),
    then over the amounts other than the identity."""
    modes = CLAIM_MODES[transform] if modes is None else modes
    identity = 0.0 if transform == "shift" else 1.0
    rows = table[(table["transform"] == transform) & (table.amount != identity) & table["mode"].isin(modes)]
    return float(rows.groupby("amount").relative_drop.mean().mean())
