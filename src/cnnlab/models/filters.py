"""The lecture's "Filtros e convoluções": moving averages, classic 3x3 kernels, stride, padding, pooling.

    >>> moving_average([5, 7, 3, 6, 5, 4, 6, 5], [1/3, 1/3, 1/3]).round(2).tolist()
    [5.0, 5.33, 4.67, 5.0, 5.0, 5.0]

torch's `conv1d`/`conv2d` compute a cross-correlation (the kernel is not flipped). `convolve2d`
flips the kernel first, so it is the convolution of the textbook; for the symmetric mean and
sharpen kernels both are the same, for Sobel the flip changes the sign of the response.
Output size along one axis: floor((in + 2 * padding - kernel) / stride) + 1
(`cnnlab.models.cnn.conv_output_size`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.models.cnn import conv_output_size

KERNELS: dict[str, np.ndarray] = {
    "mean": np.ones((3, 3)) / 9,
    "sharpen": np.array([[-1, -1, -1], [-1, 17, -1], [-1, -1, -1]]) / 9,
    # Written for true convolution (as in Sobel's definition): after the flip, a horizontal edge
    # that gets brighter downwards gives a positive response, one that gets darker a negative one.
    "sobel_horizontal": np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=float),
    # The same for vertical edges, brighter to the right.
    "sobel_vertical": np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=float),
}

# torch's names for what fills the border; F.pad calls zero padding "constant".
_PAD_MODES = {"zeros": "constant", "replicate": "replicate", "reflect": "reflect", "circular": "circular"}


def moving_average(signal, kernel) -> np.ndarray:
    """1-D 'valid' convolution: one output per position where the kernel fits entirely."""
    x = torch.as_tensor(np.asarray(signal, dtype=np.float64))[None, None]  # (1, 1, L)
    k = torch.as_tensor(np.asarray(kernel, dtype=np.float64)).flip(0)[None, None]  # flip: true convolution
    return F.conv1d(x, k).flatten().numpy()


def convolve2d(image, kernel, stride: int = 1, padding: int = 0, padding_mode: str = "zeros") -> np.ndarray:
    """True 2-D convolution of a grayscale image (H, W) with a kernel (kh, kw).

    Output shape per axis: conv_output_size(size, k, stride, padding).
    """
    if padding_mode not in _PAD_MODES:
        raise ValueError(f"padding mode '{padding_mode}' is not one of {sorted(_PAD_MODES)}")
    x = torch.as_tensor(np.asarray(image, dtype=np.float64))[None, None]  # (1, 1, H, W)
    k = torch.as_tensor(np.asarray(kernel, dtype=np.float64)).flip(0, 1)[None, None]
    if padding:
        x = F.pad(x, (padding,) * 4, mode=_PAD_MODES[padding_mode])
    return F.conv2d(x, k, stride=stride)[0, 0].numpy()


def max_pool(image, size: int = 2, stride: int | None = None) -> np.ndarray:
    """Max over each size x size window (stride defaults to the window size: no overlap)."""
    x = torch.as_tensor(np.asarray(image, dtype=np.float64))[None, None]
    return F.max_pool2d(x, size, stride or size)[0, 0].numpy()


def output_shape(shape: tuple[int, int], kernel: int, stride: int = 1, padding: int = 0) -> tuple[int, int]:
    return tuple(conv_output_size(s, kernel, stride, padding) for s in shape)


def grayscale(image_chw: np.ndarray) -> np.ndarray:
    """A (3, H, W) uint8 image as luminance on [0, 1] (ITU-R BT.601 weights)."""
    r, g, b = np.asarray(image_chw, dtype=np.float64) / 255.0
    return 0.299 * r + 0.587 * g + 0.114 * b
