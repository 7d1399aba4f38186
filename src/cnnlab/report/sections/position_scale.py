"""Problema 2: how test accuracy falls when the objects move or change size."""

from cnnlab.report import html, sensitivity, study_figures
from cnnlab.report.registry import Unavailable, figure, section

DEFAULT_IMAGES = 2000  # test images per evaluation; a study sets report.sensitivity_images


def sample_size(ctx) -> int:
    return min(int(ctx.study.report.get("sensitivity_images", DEFAULT_IMAGES)), len(ctx.y_test))


def tables(ctx) -> dict:
    """architecture -> accuracy per (transform, padding mode, amount) of the best network of that side."""

    def evaluate():
        n = sample_size(ctx)
        return {a: sensitivity.evaluate(t, ctx.x_test[:n], ctx.y_test[:n], ctx.stats) for a, t in ctx.nets.items()}

    return ctx.memo("sensitivity", evaluate)


def verdict(ctx) -> str:
    if not ctx.nets:
        return "Not measured: no trained network could be loaded."
    by_role = {"mlp": "dense", "cnn": "convolutional"}
    t = tables(ctx)
    return sensitivity.verdict({role: t[a] for role, a in by_role.items() if a in t})


@section("position_scale", "Problema 2: sensitivity to position and scale", order=50)
def render(ctx) -> list[str]:
    rows = []
    for architecture, t in (tables(ctx) if ctx.nets else {}).items():
        for label, sel in (
            ("shift 4 px (zeros)", (t["transform"] == "shift") & (t["mode"] == "zeros") & (t.amount == 4)),
            ("shift 8 px (zeros)", (t["transform"] == "shift") & (t["mode"] == "zeros") & (t.amount == 8)),
            ("scale 0.75", (t["transform"] == "scale") & (t.amount == 0.75)),
            ("scale 1.25", (t["transform"] == "scale") & (t.amount == 1.25)),
        ):
            r = t[sel].iloc[0]
            rows.append(
                {
                    "network": ctx.net_label(architecture),
                    "transform": label,
                    "accuracy %": f"{100 * r.acc:.2f}",
                    "drop (points)": f"{100 * r['drop']:.2f}",
                }
            )
    return [
        html.paragraph(
            f"The best network of each architecture (best seed) on the first {sample_size(ctx)} test images, "
            "each shifted by 0-8 pixels up, down, left or right (the border filled with zeros, the edge pixel, "
            "or the opposite edge), or rescaled about its centre (black border).",
            "note",
        ),
        html.paragraph(verdict(ctx), "verdict"),
        html.table(rows, text_columns=("network", "transform")),
    ]


@figure(
    "sensitivity",
    "Sensitivity to position and scale",
    section="position_scale",
    caption="""Problema 2 (position and scale): test accuracy of the best MLP and the best CNN as the test
    images are shifted by 0 to 8 pixels (zeros, replicate or circular padding) and rescaled from 0.75x
    to 1.25x about their centre.""",
)
def draw(ctx):
    if not ctx.nets:
        raise Unavailable("no trained network could be loaded")
    return study_figures.sensitivity_figure(tables(ctx), {a: ctx.net_label(a) for a in ctx.nets})
