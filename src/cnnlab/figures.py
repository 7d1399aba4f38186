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
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=100, layout="constrained")
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
    return fig


def filter_grid(images: torch.Tensor) -> np.ndarray:
    """Filters as images (n, 3, H, W) -> (n, H, W, 3), each scaled to [0, 1] on its own."""
    w = images.detach().float().cpu().permute(0, 2, 3, 1)
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    return ((w - lo) / (hi - lo).clamp(min=1e-12)).numpy()


def filter_mosaic(images: np.ndarray, cols: int, gap: int = 2) -> np.ndarray:
    """Filter images (n, H, W, 3) tiled into one image, cols to a row, white between them.

    One image in one Axes: matplotlib's cost grows with the number of Axes, and one Axes per
    filter made this most of a run's after-training time (docs/dev/notes.md)."""
    n, h, w, c = images.shape
    rows = int(np.ceil(n / cols))
    mosaic = np.ones((rows * (h + gap) - gap, cols * (w + gap) - gap, c), dtype=np.float32)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        mosaic[r * (h + gap) : r * (h + gap) + h, k * (w + gap) : k * (w + gap) + w] = img
    return mosaic


def show_mosaic(ax, images: np.ndarray, cols: int) -> None:
    ax.imshow(filter_mosaic(images, cols), interpolation="nearest")
    ax.axis("off")


def filters_figure(images: torch.Tensor, title: str = "First-layer filters"):
    """A grid of first-layer filters (n, 3, H, W), 16 to a row."""
    imgs = filter_grid(images)
    cols = min(16, len(imgs))
    rows = int(np.ceil(len(imgs) / cols))
    fig, ax = plt.subplots(figsize=(cols * 0.6, rows * 0.6 + 0.4), dpi=100, layout="constrained")
    show_mosaic(ax, imgs, cols)
    fig.suptitle(title, fontsize=9)
    return fig


def overflow_pixels(fig) -> float:
    """How far the figure's text and artists reach past the edges of its canvas, in pixels (0: none is cut off)."""
    fig.canvas.draw()
    tight, box = fig.get_tightbbox(fig.canvas.get_renderer()), fig.bbox_inches
    return max(0.0, box.x0 - tight.x0, box.y0 - tight.y0, tight.x1 - box.x1, tight.y1 - box.y1) * fig.dpi


def save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
