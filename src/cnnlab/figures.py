"""Figures of one trained network: confusion matrix and first-layer filters (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def confusion_figure(cm: np.ndarray, classes: list[str], title: str = "Confusion matrix (test set)"):
    cm = np.asarray(cm)
    frac = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=100)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                f"{frac[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if frac[i, j] > 0.5 else "black",
            )
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def filter_grid(images: torch.Tensor) -> np.ndarray:
    """Filters as images (n, 3, H, W) -> (n, H, W, 3), each scaled to [0, 1] on its own."""
    w = images.detach().float().cpu().permute(0, 2, 3, 1)
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    return ((w - lo) / (hi - lo).clamp(min=1e-12)).numpy()


def filters_figure(images: torch.Tensor, title: str = "First-layer filters"):
    """A grid of first-layer filters (n, 3, H, W), 16 to a row."""
    imgs = filter_grid(images)
    n = len(imgs)
    cols = min(16, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.6, rows * 0.6 + 0.4), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img in zip(axes.flat, imgs, strict=False):  # the grid may have spare axes
        ax.imshow(img, interpolation="nearest")
    fig.suptitle(title, fontsize=9)
    return fig


def save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
