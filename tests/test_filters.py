"""The lecture's filters and convolutions against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.models.filters import KERNELS, convolve2d, grayscale, max_pool, moving_average, output_shape


def test_moving_average_is_the_lectures_example():
    smooth = moving_average([5, 7, 3, 6, 5, 4, 6, 5], [1 / 3, 1 / 3, 1 / 3])
    assert smooth == pytest.approx([5, 16 / 3, 14 / 3, 5, 5, 5])
    assert smooth.round(2).tolist() == [5.0, 5.33, 4.67, 5.0, 5.0, 5.0]


def test_moving_average_flips_the_kernel():
    # Convolution, not correlation: [1, 0] * x reproduces x shifted, [0, 1] reads it unshifted.
    assert moving_average([1, 2, 3, 4], [1, 0]).tolist() == [2, 3, 4]
    assert moving_average([1, 2, 3, 4], [0, 1]).tolist() == [1, 2, 3]


def test_kernels_are_the_lectures():
    assert KERNELS["mean"] == pytest.approx(np.full((3, 3), 1 / 9))
    assert KERNELS["sharpen"].sum() == pytest.approx(1.0)  # keeps the brightness of flat regions
    assert KERNELS["sharpen"][1, 1] == pytest.approx(17 / 9)
    assert KERNELS["sobel_horizontal"].sum() == KERNELS["sobel_vertical"].sum() == 0


def test_mean_of_a_constant_image_is_that_constant():
    out = convolve2d(np.full((6, 6), 0.7), KERNELS["mean"])
    assert out.shape == (4, 4) and out == pytest.approx(np.full((4, 4), 0.7))
    # Zero padding darkens the border: a corner sees 4 of its 9 pixels.
    padded = convolve2d(np.full((6, 6), 0.9), KERNELS["mean"], padding=1)
    assert padded[0, 0] == pytest.approx(0.9 * 4 / 9) and padded[2, 2] == pytest.approx(0.9)
    # Replicate padding keeps the constant everywhere.
    assert convolve2d(np.full((6, 6), 0.9), KERNELS["mean"], padding=1, padding_mode="replicate") == pytest.approx(
        np.full((6, 6), 0.9)
    )


def test_sobel_finds_a_step_edge_and_only_its_direction():
    step = np.zeros((6, 6))
    step[3:, :] = 1.0  # dark above, bright below: a horizontal edge
    h = convolve2d(step, KERNELS["sobel_horizontal"])
    v = convolve2d(step, KERNELS["sobel_vertical"])
    # Rows 1 and 2 of the output straddle the edge: 1+2+1 = 4 on each, 0 in flat rows.
    assert h.tolist() == [[0] * 4, [4] * 4, [4] * 4, [0] * 4]
    assert np.all(v == 0)
    assert convolve2d(step.T, KERNELS["sobel_vertical"]).tolist() == h.T.tolist()


def test_sharpen_leaves_flat_regions_and_boosts_a_spike():
    img = np.full((5, 5), 0.5)
    img[2, 2] = 1.0
    out = convolve2d(img, KERNELS["sharpen"])
    assert out[1, 1] == pytest.approx((17 * 1.0 - 8 * 0.5) / 9)
    assert out[0, 0] == pytest.approx((17 * 0.5 - 7 * 0.5 - 1.0) / 9)  # a neighbour of the spike is pushed down


@pytest.mark.parametrize(
    "size, kernel, stride, padding, expected",
    [
        (32, 3, 1, 0, 30),
        (32, 3, 1, 1, 32),
        (32, 3, 2, 1, 16),
        (32, 5, 1, 2, 32),
        (32, 5, 2, 0, 14),
        (7, 3, 2, 0, 3),
        (32, 2, 2, 0, 16),
    ],
)
def test_output_size_formula_matches_the_convolution(size, kernel, stride, padding, expected):
    assert output_shape((size, size), kernel, stride, padding) == (expected, expected)
    out = convolve2d(np.ones((size, size)), np.ones((kernel, kernel)), stride=stride, padding=padding)
    assert out.shape == (expected, expected)


def test_max_pool_keeps_each_windows_largest_value():
    img = np.arange(16, dtype=float).reshape(4, 4)
    assert max_pool(img, 2).tolist() == [[5, 7], [13, 15]]
    assert max_pool(img, 2, stride=1).shape == (3, 3)


def test_grayscale_weights_sum_to_one():
    white = np.full((3, 2, 2), 255, dtype=np.uint8)
    assert grayscale(white) == pytest.approx(np.ones((2, 2)))
