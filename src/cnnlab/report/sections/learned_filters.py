"""What the first layers learned, and one image through the convolutions."""

from torch import nn

from cnnlab.report import html, network_figures
from cnnlab.report.registry import Unavailable, figure, section
from cnnlab.report.sections.confusion import NO_NETWORK


@section("learned_filters", "Learned filters", order=70)
def render(ctx) -> list[str]:
    return [
        html.paragraph(
            "A dense network's first-layer weights, one row per unit, reshaped to the 32x32x3 image they are "
            "matched against (a template); a convolutional network's first-layer kernels; then one test image "
            "through the convolutions.",
            "note",
        )
    ]


@figure(
    "filters",
    "Learned filters",
    section="learned_filters",
    category="Best networks",
    caption="""What the first layers learned: the best MLP's weights per unit, reshaped to the 32x32x3
    image they are matched against (templates), and the best CNN's first-layer kernels.""",
)
def draw_filters(ctx):
    if not ctx.nets:
        raise Unavailable(NO_NETWORK)
    return network_figures.filters_figure(ctx.nets)


@figure(
    "activations",
    "Activation maps",
    section="learned_filters",
    category="Best networks",
    caption="""One test image through the best CNN: the output maps of each convolution layer (first
    channels), caught with forward hooks.""",
)
def draw_activations(ctx):
    convolutional = [t for t in ctx.nets.values() if any(isinstance(m, nn.Conv2d) for m in t.net.modules())]
    if not convolutional:
        raise Unavailable("no checkpoint of a finished network with convolutions could be loaded from MLflow")
    if not len(ctx.y_test):
        raise Unavailable("the test set is empty")
    label = ctx.stats["classes"][int(ctx.y_test[0])]
    return network_figures.activations_figure(convolutional[0], ctx.x_test[:1], ctx.stats, label)
