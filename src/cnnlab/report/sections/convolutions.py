"""Filtros e convoluções: the lecture's kernels, stride, padding and pooling on a test image."""

import numpy as np

from cnnlab.models import filters
from cnnlab.report import html, network_figures
from cnnlab.report.registry import Unavailable, figure, section

SIGNAL = [5, 7, 3, 6, 5, 4, 6, 5]  # the lecture's 1-D example


@section("convolutions", "Filtros e convoluções: filters and convolutions", order=80)
def render(ctx) -> list[str]:
    shapes = [
        {
            "input": "32x32",
            "kernel": k,
            "stride": s,
            "padding": p,
            "output": "x".join(map(str, filters.output_shape((32, 32), k, s, p))),
        }
        for k, s, p in ((3, 1, 0), (3, 1, 1), (3, 2, 1), (5, 1, 2), (5, 2, 0), (2, 2, 0))
    ]
    ma = filters.moving_average(SIGNAL, [1 / 3] * 3)
    return [
        html.paragraph(
            f"Moving average of {SIGNAL} with [1/3, 1/3, 1/3]: [{', '.join(f'{v:.2f}' for v in ma)}]."
        ),
        html.paragraph(
            "torch's conv2d computes a cross-correlation; the kernels below are flipped first, so this is the true "
            "convolution (for the symmetric mean and sharpen kernels the two agree). Output size per axis: "
            "floor((in + 2 x padding - kernel) / stride) + 1.",
            "note",
        ),
        html.table(shapes),
    ]


@figure(
    "convolutions",
    "Filters and convolutions",
    section="convolutions",
    category="Filters and convolutions",
    caption="""A test image filtered by the mean, sharpen and Sobel kernels (true convolution, the kernel
    flipped), the output sizes that stride and padding give, max pooling, and the lecture's 1-D moving
    average of [5, 7, 3, 6, 5, 4, 6, 5].""",
)
def draw(ctx):
    if not len(ctx.y_test):
        raise Unavailable("the test set is empty")
    label = ctx.stats["classes"][int(ctx.y_test[0])]
    return network_figures.convolutions_figure(np.asarray(ctx.x_test[0]), label)
