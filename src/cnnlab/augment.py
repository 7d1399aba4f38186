"""Whole-batch augmentation with per-image random parameters: translation, flip, cutout.

A translation by (dy, dx) reads the source pixel (i - dy, j - dx); where that falls outside the
image, the padding mode decides what is seen, exactly as in a convolution layer:
zeros (zero padding), replicate (the nearest edge pixel) or circular (the opposite edge).
Everything is index arithmetic on tensors, so it runs as fast on the GPU as the model.
"""

from __future__ import annotations

import torch

PADDING_MODES = ("zeros", "replicate", "circular")


def random_translate(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, mode: str = "zeros") -> torch.Tensor:
    """Shift each image of x (B, C, H, W) by its own (dy, dx) pixels, filling per `mode`."""
    if mode not in PADDING_MODES:
        raise ValueError(f"padding mode '{mode}' is not one of {PADDING_MODES}")
    b, _, h, w = x.shape
    rows = torch.arange(h, device=x.device)[None, :] - dy[:, None]  # (B, H) source row of each output row
    cols = torch.arange(w, device=x.device)[None, :] - dx[:, None]  # (B, W)
    if mode == "circular":
        rows, cols = rows % h, cols % w
    inside = None
    if mode == "zeros":
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]  # (B, H, W)
    rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = x[bi, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C): advanced indices first
    out = out.permute(0, 3, 1, 2)
    if inside is not None:
        out = out * inside[:, None].to(out.dtype)
    return out.contiguous(memory_format=torch.contiguous_format)


def random_flip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images of x (B, C, H, W) where flip (B,) is True."""
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def cutout(x: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a size x size square centred at (cy, cx) per image (clipped at the border)."""
    h, w = x.shape[-2:]
    r = torch.arange(h, device=x.device)[None, :]
    c = torch.arange(w, device=x.device)[None, :]
    half = size // 2
    in_r = (r >= (cy[:, None] - half)) & (r < (cy[:, None] - half + size))  # (B, H)
    in_c = (c >= (cx[:, None] - half)) & (c < (cx[:, None] - half + size))  # (B, W)
    hole = in_r[:, :, None] & in_c[:, None, :]
    return x * (~hole)[:, None].to(x.dtype)
