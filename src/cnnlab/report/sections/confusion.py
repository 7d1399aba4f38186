"""Confusion matrices of the best network of each architecture."""

from cnnlab.report import network_figures, networks
from cnnlab.report.registry import Unavailable, figure, section

NO_NETWORK = "no checkpoint of a finished run could be loaded from MLflow"


@section("confusion", "Confusion matrices", order=60)
def render(ctx) -> list[str]:
    return []


@figure(
    "confusion",
    "Confusion matrices",
    section="confusion",
    category="Best networks",
    caption="""Confusion matrices on the test set of the best MLP and the best CNN (their best seed); rows
    are the true classes, each normalized to sum to 1.""",
)
def draw(ctx):
    if not ctx.nets:
        raise Unavailable(NO_NETWORK)
    y = ctx.y_test.numpy()
    matrices = {
        a: (networks.confusion_matrix(ctx.client, t, ctx.x_test, y, ctx.stats), ctx.net_label(a))
        for a, t in ctx.nets.items()
    }
    return network_figures.confusion_pair_figure(matrices, ctx.stats["classes"])
