"""Whole-batch augmentation with per-image random parameters: translation, flip, cutout.

A translation by (dy, dx) reads the source pixel (i - dy, j - dx); where that falls outside the
image, the padding mode decides what is seen, exactly as in a convolution layer:
zeros (zero padding), replicate (the nearest edge pixel) or circular (the opposite edge).
Everything is padding and one row gather per batch on tensors, so it runs as fast on the GPU as
the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnlab.padding import PADDING_MODES


def random_translate(
    x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, mode: str = "zeros", max_shift: int | None = None
) -> torch.Tensor:
    """Shift each image of x (B, C, H, W) by its own (dy, dx) pixels, filling per `mode`.

    `max_shift`, a bound on |dy| and |dx| known to the caller, saves reading the shifts back from
    the device (a synchronisation per batch on a GPU).
    """
    b, _, h, w = x.shape
    dy, dx = bounded_shifts(dy, dx, h, w, mode)
    if b == 0:
        return x.clone()
    m = int(torch.maximum(dy.abs().max(), dx.abs().max())) if max_shift is None else min(max_shift, max(h, w))
    return shifted_images(pad_images(x, m, mode), torch.arange(b, device=x.device), dy, dx, m)


def bounded_shifts(
    dy: torch.Tensor, dx: torch.Tensor, h: int, w: int, mode: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same shifts, each at most max(h, w) pixels (circular: at most h/2, w/2) in size."""
    if mode not in PADDING_MODES:
        raise ValueError(f"padding mode '{mode}' is not one of {PADDING_MODES}")
    if mode == "circular":  # a shift by h is no shift: bring every shift into [-h/2, h/2)
        return (dy + h // 2) % h - h // 2, (dx + w // 2) % w - w // 2
    return dy.clamp(-h, h), dx.clamp(-w, w)  # a shift by h or more sees only padding, as a shift by h does


def pad_images(x: torch.Tensor, m: int, mode: str) -> torch.Tensor:
    """x (N, C, H, W) padded by m pixels on every side per `mode`: (N, C, H + 2m, W + 2m), contiguous."""
    if mode == "zeros":
        return F.pad(x, (m, m, m, m)).contiguous(memory_format=torch.contiguous_format)
    h, w = x.shape[-2:]
    rows = torch.arange(-m, h + m, device=x.device)
    cols = torch.arange(-m, w + m, device=x.device)
    rows, cols = (rows.clamp(0, h - 1), cols.clamp(0, w - 1)) if mode == "replicate" else (rows % h, cols % w)
    return x.index_select(2, rows).index_select(3, cols).contiguous(memory_format=torch.contiguous_format)


def shifted_images(
    padded: torch.Tensor, idx: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, m: int
) -> torch.Tensor:
    """Images idx (B,) of `padded` (N, C, H + 2m, W + 2m), each shifted by its (dy, dx) with |dy|, |dx| <= m.

    Returns (B, C, H, W); a shift larger than m reads outside its image, so bound it first.
    """
    _, c, hp, wp = padded.shape
    h, w = hp - 2 * m, wp - 2 * m
    # Output row i of image b, channel c is the W pixels of padded row (i - dy + m) from column (m - dx):
    # a run of W consecutive values. So the shift is one row gather (index_select) from the view of
    # every W-long run of the padded images, not a per-pixel gather, and picking the images is free.
    dev = padded.device
    image_start = (idx[:, None, None] * c + torch.arange(c, device=dev)[None, :, None]) * (hp * wp)  # (B, C, 1)
    row_start = (torch.arange(h, device=dev)[None, :] + (m - dy)[:, None]) * wp + (m - dx)[:, None]  # (B, H)
    runs = padded.reshape(-1).unfold(0, w, 1)  # (N * C * Hp * Wp - W + 1, W), a view when padded is contiguous
    return runs.index_select(0, (image_start + row_start[:, None, :]).view(-1)).view(len(idx), c, h, w)


def random_flip(x: torch.Tensor, flip: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Mirror left-right the images of x (B, C, H, W) where flip (B,) is True; `out=x` works in place."""
    if out is x and x.device.type == "cpu":
        # Rewrite only the mirrored images, whole images at a time, instead of a where over the
        # whole batch (docs/dev/notes.md). Not on a GPU: finding them (nonzero) would wait for the device.
        chosen = flip.nonzero().squeeze(1)
        return x.index_copy_(0, chosen, x.index_select(0, chosen).flip(3))
    return torch.where(flip[:, None, None, None], x.flip(3), x, out=out)


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
