"""Problema 1: a dense first layer grows with the image; a convolution's does not."""

import pandas as pd

from cnnlab.report import html, study_figures
from cnnlab.report.networks import first_layer_params
from cnnlab.report.registry import Unavailable, figure, section


@section("dimensionality", "Problema 1: high dimensionality", order=40)
def render(ctx) -> list[str]:
    rows = [
        {
            "variant": r.variant,
            "model": r.model,
            "parameters": f"{int(r.params):,}",
            "first layer": f"{int(r.first_layer_params):,}",
        }
        for r in ctx.table.itertuples()
        if not pd.isna(r.params) and not pd.isna(r.first_layer_params)
    ]
    text = (
        "A fully connected first layer sees every pixel of every channel: 32 x 32 x 3 = 3,072 inputs per unit, "
        "so its weights grow with the image size. A convolution's first layer has k x k x 3 weights per filter, "
        "shared over all positions, whatever the image size."
    )
    best = [
        f"{t.family.upper()} {t.label}: first layer {first_layer_params(t.net):,} parameters" for t in ctx.nets.values()
    ]
    return [
        html.paragraph(text),
        html.paragraph("; ".join(best) + "." if best else "", "note"),
        html.table(rows, text_columns=("variant", "model")),
    ]


@figure(
    "params_vs_accuracy",
    "Parameters vs accuracy",
    section="dimensionality",
    caption="""Problema 1: high dimensionality. Trainable parameters (log scale) against test accuracy
    for every variant.""",
)
def draw(ctx):
    if not (ctx.table.n_runs > 0).any():
        raise Unavailable("no run finished")
    return study_figures.params_figure(ctx.table)
