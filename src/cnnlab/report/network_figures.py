"""Figures of single networks and images: confusion, learned filters, activation maps, convolutions."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cnnlab.figures import confusion_figure, filter_grid, plt, show_mosaic
from cnnlab.models import filters
from cnnlab.report.networks import TrainedNet


def placeholder_figure(title: str, reason: str):
    """Stands in for a figure that cannot be drawn, so the report (and Snakemake's outputs) still exist."""
    fig, ax = plt.subplots(figsize=(7, 1.6), dpi=100, layout="constrained")
    ax.axis("off")
    ax.text(0.5, 0.62, title, ha="center", va="center", fontsize=12, weight="bold")
    ax.text(0.5, 0.28, f"unavailable: {reason}", ha="center", va="center", fontsize=9, wrap=True)
    return fig


def _render(fig) -> np.ndarray:
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


def confusion_pair_figure(matrices: dict[str, tuple[np.ndarray, str]], classes: list[str]):
    """The existing one-matrix figure, drawn per network and placed side by side."""
    images = [_render(confusion_figure(cm, classes, title)) for cm, title in matrices.values()]
    height = max(im.shape[0] for im in images)
    images = [np.pad(im, ((0, height - im.shape[0]), (0, 0), (0, 0)), constant_values=255) for im in images]
    joined = np.concatenate(images, axis=1)
    fig = plt.figure(figsize=(joined.shape[1] / 100, joined.shape[0] / 100), dpi=100, layout="constrained")
    fig.figimage(joined, 0, 0)
    return fig


def _grid(subfig, images: np.ndarray, cols: int, title: str) -> None:
    show_mosaic(subfig.subplots(), images, cols)
    subfig.suptitle(title, fontsize=9)


def filters_figure(nets: dict[str, TrainedNet]):
    """Each network's first layer: dense rows seen as 32x32 templates, or its kernels (each scaled to [0, 1])."""
    parts = []
    for trained in nets.values():
        net = trained.net
        dense = isinstance(net.first_layer(), nn.Linear)
        images = net.first_layer_images(32 if dense else 64)
        shape = "x".join(map(str, (*images.shape[-2:], images.shape[1])))
        what = f"first {len(images)} templates ({shape})" if dense else f"first-layer kernels ({shape})"
        parts.append((filter_grid(images), 16, f"{trained.family.upper()} {trained.label}: {what}"))
    heights = [np.ceil(len(imgs) / cols) for imgs, cols, _ in parts]
    fig = plt.figure(figsize=(9, 0.62 * sum(heights) + 0.5 * len(parts)), dpi=100, layout="constrained")
    subfigs = fig.subfigures(len(parts), 1, height_ratios=[h + 0.8 for h in heights], squeeze=False)[:, 0]
    for subfig, (imgs, cols, title) in zip(subfigs, parts, strict=False):
        _grid(subfig, imgs, cols, title)
    return fig


@torch.no_grad()
def conv_activations(trained: TrainedNet, image_uint8: torch.Tensor, stats: dict) -> list[tuple[str, torch.Tensor]]:
    """Output of every nn.Conv2d for one image (1, 3, H, W), caught by forward hooks."""
    maps: list[tuple[str, torch.Tensor]] = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, name=name: maps.append((name, out[0].detach())))
        for name, m in trained.net.named_modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        trained.net(trained.prepare(image_uint8, stats))
    finally:
        for h in hooks:
            h.remove()
    return maps


def activations_figure(trained: TrainedNet, image_uint8: torch.Tensor, stats: dict, label: str, channels: int = 8):
    maps = conv_activations(trained, image_uint8, stats)
    fig, axes = plt.subplots(
        len(maps), channels + 1, figsize=(1.25 * (channels + 1), 1.35 * len(maps) + 0.5), dpi=100, squeeze=False,
        layout="constrained",
    )
    for ax in axes.flat:
        ax.axis("off")
    for row, (name, out) in enumerate(maps):
        if row == 0:
            axes[0, 0].imshow(image_uint8[0].permute(1, 2, 0).numpy())
            axes[0, 0].set_title(f"input: {label}", fontsize=7)
        for c in range(min(channels, len(out))):
            axes[row, c + 1].imshow(out[c].float().numpy(), cmap="viridis")
            axes[row, c + 1].set_title(f"{name} #{c} {tuple(out.shape[-2:])}" if c == 0 else f"#{c}", fontsize=7)
    fig.suptitle(f"Activation maps of {trained.label} (conv outputs, before the non-linearity)", fontsize=9)
    return fig


def _unit(img: np.ndarray) -> np.ndarray:
    """Scaled so its 99th percentile is 1: a few strong edges do not leave the rest black."""
    return np.clip(img / (float(np.percentile(img, 99)) or 1.0), 0, 1)


def _show(ax, img: np.ndarray, title: str, signed: bool, gray_range: tuple[float, float] = (0.0, 1.0)) -> None:
    if signed:  # red positive, blue negative, white zero; the 99th percentile keeps one spike from washing it out
        limit = float(np.percentile(np.abs(img), 99)) or 1.0
        ax.imshow(img, cmap="RdBu_r", vmin=-limit, vmax=limit)
    else:
        ax.imshow(img, cmap="gray", vmin=gray_range[0], vmax=gray_range[1])
    ax.set_title(f"{title}\n{img.shape[0]}x{img.shape[1]}", fontsize=8)
    ax.axis("off")


def convolutions_figure(image_uint8: np.ndarray, label: str):
    """A test image through the lecture's kernels, stride, padding and max pooling; a 1-D moving average."""
    gray = filters.grayscale(image_uint8)  # (H, W) on [0, 1]
    k = filters.KERNELS
    # Replicate padding keeps the frame of zeros from showing up as a strong edge all around.
    same = {name: filters.convolve2d(gray, kern, padding=1, padding_mode="replicate") for name, kern in k.items()}
    panels = [
        ("input (grayscale)", gray, False),
        ("mean 3x3", same["mean"], False),
        ("sharpen 3x3", np.clip(same["sharpen"], 0, 1), False),
        ("sobel_horizontal", same["sobel_horizontal"], True),
        ("sobel_vertical", same["sobel_vertical"], True),
        ("edge strength |sobel|", _unit(np.hypot(same["sobel_horizontal"], same["sobel_vertical"])), False),
        ("mean, stride 2, zero pad 1", filters.convolve2d(gray, k["mean"], stride=2, padding=1), False),
        ("mean, no padding", filters.convolve2d(gray, k["mean"]), False),
        ("max pool 2x2, stride 2", filters.max_pool(gray, 2), False),
    ]
    fig = plt.figure(figsize=(12, 6.2), dpi=100, layout="constrained")
    axes = fig.subplots(2, 5)
    # One grey scale for the input and its smoothed, sharpened and pooled versions: the input's own
    # range, so a dim or bright image still shows its contrast (zero padding shows as black).
    lo, hi = float(gray.min()), float(gray.max())
    gray_range = (lo, hi if hi > lo else lo + 1.0)
    for ax, (title, img, signed) in zip(axes.flat, panels, strict=False):
        _show(ax, img, title, signed, (0.0, 1.0) if title.startswith("edge") else gray_range)
    ax = axes.flat[-1]
    signal = [5, 7, 3, 6, 5, 4, 6, 5]
    smooth = filters.moving_average(signal, [1 / 3] * 3)
    ax.plot(range(len(signal)), signal, "o-", label="signal")
    ax.plot(range(1, len(signal) - 1), smooth, "s-", label="moving average (3)")
    ax.set_title("1-D: [5,7,3,6,5,4,6,5] with [1/3, 1/3, 1/3]", fontsize=8)
    ax.legend(fontsize=7)
    fig.suptitle(
        f"Filters and convolutions on a test image ({label}); 3x3 kernels with replicate padding 1 unless stated",
        fontsize=9,
    )
    return fig
