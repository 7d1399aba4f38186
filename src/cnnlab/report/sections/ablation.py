"""What each optimization adds over its family's baseline, paired by seed."""

import math

from cnnlab.report import html, study_figures
from cnnlab.report.registry import Unavailable, figure, section


def ablation(ctx):
    return ctx.memo("ablation", lambda: study_figures.ablation_table(ctx.study, ctx.table, ctx.records))


@section("ablation", "Ablation: what each optimization adds", order=20)
def render(ctx) -> list[str]:
    rows = [
        {
            "model": r.model,
            "variant": r.variant,
            "adds": r.adds,
            "change (points)": ""
            if math.isnan(r.delta_mean)
            else f"{100 * r.delta_mean:+.2f} ± {100 * r.delta_std:.2f}",
            "seed pairs": r.n_pairs,
        }
        for r in ablation(ctx).itertuples()
    ]
    return [
        html.paragraph(
            "Change in test accuracy over the family's baseline, paired by seed (each seed compared with the "
            "baseline's same seed); error bars: sample std of the per-seed changes. Red: all together.",
            "note",
        ),
        html.table(rows, text_columns=("model", "variant", "adds")),
    ]


@figure(
    "ablation",
    "Ablation",
    section="ablation",
    caption="""Change in test accuracy that each optimization brings over its family's baseline, the
    families side by side; red is all together. Bars are the mean of the per-seed changes (each seed
    against the baseline's same seed), error bars their sample standard deviation.""",
)
def draw(ctx):
    table = ablation(ctx)
    if not len(table):
        raise Unavailable("no family has both a baseline and another finished variant")
    return study_figures.ablation_figure(table, ctx.table)
