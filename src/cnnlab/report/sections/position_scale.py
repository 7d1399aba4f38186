"""Problema 2: how test accuracy falls when the objects move or change size.

Measured on networks trained without shift augmentation (a network that saw shifted images in
training would show what the augmentation taught it, not what its layers do): the variants the
study lists under `report.sensitivity`, or else the best such variant of each architecture. Every
finished seed of each is evaluated, and each network's score is the share of its accuracy above
chance that it keeps (cnnlab.report.sensitivity).
"""

from __future__ import annotations

import math
import statistics

from cnnlab.report import html, networks, sensitivity, study_figures
from cnnlab.report.registry import Unavailable, figure, section
from cnnlab.report.runs import FINISHED

DEFAULT_IMAGES = 2000  # test images per evaluation; a study sets report.sensitivity_images


def sample_size(ctx) -> int:
    return min(int(ctx.study.report.get("sensitivity_images", DEFAULT_IMAGES)), len(ctx.y_test))


def shifted_in_training(ctx, variant: str) -> bool:
    runs = [r for r in ctx.records if r.variant == variant and r.params]
    return any(r.params.get("augment.translate", "0") not in ("0", "") for r in runs)


def chosen_variants(ctx) -> list[str]:
    """The networks to compare: the study's list, or per architecture its best unshifted variant (on validation)."""
    listed = ctx.study.report.get("sensitivity")
    if listed:
        return [v for v in listed if v in ctx.study.variants and not shifted_in_training(ctx, v)]
    done = ctx.table[ctx.table.n_runs > 0]
    done = done[~done.variant.map(lambda v: shifted_in_training(ctx, v))]
    ranked = done.sort_values("best_val_acc_mean", ascending=False)
    return [rows.iloc[0].variant for _, rows in ranked.groupby("architecture", sort=False)]


def evaluations(ctx) -> dict[tuple[str, int], object]:
    """(variant, seed) -> sensitivity.evaluate's table, for every finished seed of the chosen variants."""

    def evaluate_all():
        n = sample_size(ctx)
        out = {}
        for record in ctx.records:
            if record.variant in chosen_variants(ctx) and record.state == FINISHED:
                trained = networks.load_trained(ctx.client, record)
                if trained is not None:
                    out[(record.variant, record.seed)] = sensitivity.evaluate(
                        trained, ctx.x_test[:n], ctx.y_test[:n], ctx.stats
                    )
        return out

    return ctx.memo("sensitivity", evaluate_all)


def relative_drops(ctx, transform: str) -> dict[str, dict[int, float]]:
    """variant -> seed -> mean relative accuracy drop over the transform's amounts (a fraction)."""
    drops: dict[str, dict[int, float]] = {}
    for (variant, seed), table in evaluations(ctx).items():
        drops.setdefault(variant, {})[seed] = sensitivity.mean_relative_drop(table, transform)
    return drops


def architecture(ctx, variant: str) -> str:
    return str(ctx.table.set_index("variant").loc[variant, "architecture"])


def _mean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.fmean(values) if values else math.nan


def summary_sentences(ctx) -> list[str]:
    """What the numbers show, in words, whichever way they point."""
    shift, scale = relative_drops(ctx, "shift"), relative_drops(ctx, "scale")
    out = []
    for variant in shift:
        s, c = _mean(shift[variant].values()), _mean(scale[variant].values())
        if math.isnan(s) or math.isnan(c):  # a drop relative to zero correct images is undefined
            out.append(f"{variant} classified the untouched images no better than chance, so what it keeps above "
                       "chance is undefined.")
            continue
        out.append(
            f"{variant} ({architecture(ctx, variant)}, {len(shift[variant])} seeds) keeps on average "
            f"{100 * (1 - s):.1f}% of its accuracy above chance under shifts of 1-8 pixels and {100 * (1 - c):.1f}% "
            "under zooms of 0.75x-1.25x (zoom-out borders replicated or wrapped, not black)."
        )
    dense = [v for v in shift if architecture(ctx, v) == "dense"]
    conv = [v for v in shift if architecture(ctx, v) == "convolutional"]
    for c in conv:
        for d in dense:
            for drops, what in ((shift, "position"), (scale, "scale")):
                cd, dd = _mean(drops[c].values()), _mean(drops[d].values())
                if math.isnan(cd) or math.isnan(dd):
                    continue
                word = "less" if cd < dd else "more" if cd > dd else "as much"
                out.append(
                    f"{c} loses {word} of its accuracy above chance than {d} under changes of {what}"
                    f" ({100 * cd:.1f}% against {100 * dd:.1f}%)."
                )
    out.extend(black_border_sentences(ctx))
    return out


def black_border_sentences(ctx) -> list[str]:
    """What a black zoom-out border does to each network against a border without black, and what is left of
    a global-average head's sensitivity to scale once the border is not black: its result in words, from the
    numbers."""
    kept = {}
    for variant, tables in _tables_by_variant(ctx).items():
        mean = sensitivity.mean_table(tables)
        out = mean[mean.amount < 1]
        black = sensitivity.mean_relative_drop(out, "scale", ("zeros",))
        other = sensitivity.mean_relative_drop(out, "scale", ("replicate", "circular"))
        if not (math.isnan(black) or math.isnan(other)):
            kept[variant] = (100 * (1 - black), 100 * (1 - other), 100 * (1 - sensitivity.mean_relative_drop(
                mean, "scale")))
    if not kept:
        return []
    said = ["Zoomed out, the share of accuracy above chance each network keeps with a black border and with a "
            "replicated or wrapped one: " + "; ".join(f"{v} {b:.1f}% and {o:.1f}%" for v, (b, o, _) in kept.items())
            + "."]
    heads = [v for v in kept if "model.head=global_average" in (ctx.study.variants[v].overrides
                                                                  if v in ctx.study.variants else ())]
    dense = [v for v in kept if architecture(ctx, v) == "dense"]
    cost = {v: o - b for v, (b, o, _) in kept.items()}  # points of the share that black takes away
    for gap in heads:
        others = [cost[v] for v in kept if v != gap]
        if others:
            lo, hi = min(others), max(others)
            border = (f"the black border costs it {cost[gap]:.1f} points, the other networks {lo:.1f} to {hi:.1f}"
                      + (": about alike" if lo - 10 <= cost[gap] <= hi + 10 else ""))
        else:
            border = f"the black border costs it {cost[gap]:.1f} points"
        for mlp in dense:
            g, m = kept[gap][2], kept[mlp][2]
            relation = "less" if g < m else "more" if g > m else "as much"
            said.append(
                f"Without a black border {gap} keeps {relation} under zooms than {mlp} ({g:.1f}% against {m:.1f}%), "
                f"and {border}. A global-average head forgets where a feature fired, not how large it is: its "
                "convolutions and pooling learn features of a fixed size, which a zoom changes.")
    return said


def _tables_by_variant(ctx) -> dict[str, list]:
    by_variant: dict[str, list] = {}
    for (variant, _), table in evaluations(ctx).items():
        by_variant.setdefault(variant, []).append(table)
    return by_variant


@section("position_scale", "Problema 2: sensitivity to position and scale", order=50)
def render(ctx) -> list[str]:
    if not evaluations(ctx):
        raise Unavailable("no trained network without shift augmentation could be loaded")
    rows = []
    for (variant, seed), t in sorted(evaluations(ctx).items()):
        base = float(t[(t["transform"] == "shift") & (t.amount == 0)].acc.iloc[0])
        rows.append(
            {
                "network": f"{variant} (seed {seed})",
                "untouched %": f"{100 * base:.2f}",
                "shift 4 px, zeros": _kept(t, "shift", "zeros", 4),
                "shift 8 px, zeros": _kept(t, "shift", "zeros", 8),
                "shift 8 px, circular": _kept(t, "shift", "circular", 8),
                "zoom out 0.75, black": _kept(t, "scale", "zeros", 0.75),
                "zoom out 0.75, replicate": _kept(t, "scale", "replicate", 0.75),
                "zoom in 1.25": _kept(t, "scale", sensitivity.ZOOM_IN, 1.25),
            }
        )
    return [
        html.paragraph(
            f"Networks trained without shift augmentation, every finished seed, on the first {sample_size(ctx)} "
            "test images, each shifted by 0-8 pixels up, down, left or right (the border filled with zeros, the "
            "edge pixel, or the opposite edge), or zoomed about its centre: in by cropping and resizing, out by "
            "resizing down and padding (black, replicated or wrapped border). The table gives the accuracy kept "
            "above chance: (accuracy on the changed images - 10%) as a share of (the same network's accuracy on the "
            "untouched ones - 10%). The claims read zoom-out from the replicated and wrapped borders only.",
            "note",
        ),
        html.paragraph(" ".join(summary_sentences(ctx)), "verdict"),
        html.table(rows, text_columns=("network",)),
    ]


def _kept(table, transform: str, mode: str, amount: float) -> str:
    """The share of accuracy above chance kept, as the table shows it ('–' where it is undefined)."""
    drop = _at(table, transform, mode, amount)
    return "–" if math.isnan(drop) else f"{100 * (1 - drop):.1f}%"


def _at(table, transform: str, mode: str, amount: float) -> float:
    rows = table[(table["transform"] == transform) & (table["mode"] == mode) & (table.amount == amount)]
    return float(rows.relative_drop.iloc[0])


@figure(
    "sensitivity",
    "Sensitivity to position and scale",
    section="position_scale",
    caption="""Problema 2: sensitivity to position and scale. Accuracy kept above chance (share of each network's
    accuracy above 10% on the untouched test images, mean over seeds) as the images are shifted by 0 to 8 pixels
    (zeros, replicate or circular padding) and zoomed from 0.75x to 1.25x about their centre (in: cropped and
    resized; out: padded with a black, replicated or wrapped border); networks trained without shift
    augmentation.""",
)
def draw(ctx):
    by_variant: dict[str, list] = {}
    for (variant, _), table in evaluations(ctx).items():
        by_variant.setdefault(variant, []).append(table)
    if not by_variant:
        raise Unavailable("no trained network without shift augmentation could be loaded")
    return study_figures.sensitivity_figure(
        {v: sensitivity.mean_table(tables) for v, tables in by_variant.items()},
        {v: f"{v} ({len(tables)} seeds)" for v, tables in by_variant.items()},
    )
