"""Validation accuracy and loss per epoch, every variant."""

from cnnlab.report import html, study_figures
from cnnlab.report.registry import Unavailable, figure, section


@section("curves", "Learning curves", order=30)
def render(ctx) -> list[str]:
    return [html.paragraph("Validation accuracy and loss per epoch: mean over seeds, band from min to max.", "note")]


@figure(
    "learning_curves",
    "Learning curves",
    section="curves",
    caption="""Validation accuracy and loss per epoch for every variant: the mean over seeds, with a band
    from the lowest to the highest seed.""",
)
def draw(ctx):
    if not any(r.history for r in ctx.records):
        raise Unavailable("no run logged per-epoch metrics")
    return study_figures.learning_curves_figure(ctx.table, ctx.records)
