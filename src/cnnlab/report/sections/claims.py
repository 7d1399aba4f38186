"""The lecture's claims with their verdicts: the report's first section, and claims.csv.

Rows: the CNN beats the MLP (the best of each architecture, chosen on validation, and the two
baselines); the CNN is less sensitive to position, and to scale (Problema 2's networks); and each
optimization a variant adds (`optimization:` in the study file) improves test accuracy over its
family's baseline. Every effect is paired by seed; see cnnlab.report.claims for the arithmetic.
"""

from __future__ import annotations

import math

import pandas as pd

from cnnlab.report import claims, html, study_figures
from cnnlab.report.registry import section
from cnnlab.report.runs import FINISHED
from cnnlab.report.sections import position_scale


def test_accuracy(ctx) -> dict[str, dict[int, float]]:
    """variant -> seed -> test accuracy of its finished runs."""
    acc: dict[str, dict[int, float]] = {}
    for r in ctx.records:
        if r.state == FINISHED and not math.isnan(r.metric("test/acc")):
            acc.setdefault(r.variant, {})[r.seed] = r.metric("test/acc")
    return acc


def best_on_validation(ctx, architecture: str) -> str | None:
    rows = ctx.table[(ctx.table.architecture == architecture) & (ctx.table.n_runs > 0)]
    rows = rows.dropna(subset=["best_val_acc_mean"])
    return None if rows.empty else rows.sort_values("best_val_acc_mean", ascending=False).iloc[0].variant


def cnn_against_mlp(ctx, acc) -> list[dict]:
    rows = []
    pairs = [("best of each, chosen on validation",
              best_on_validation(ctx, "dense"), best_on_validation(ctx, "convolutional"))]
    bases = study_figures.baselines(ctx.study, ctx.table)
    arch = dict(zip(ctx.table.variant, ctx.table.architecture, strict=True))
    dense_base = next((v for v in bases.values() if arch.get(v) == "dense"), None)
    conv_base = next((v for v in bases.values() if arch.get(v) == "convolutional"), None)
    pairs.append(("baselines", dense_base, conv_base))
    for what, dense, conv in pairs:
        if dense and conv:
            rows.append(claims.claim_row(
                f"the CNN beats the MLP ({what})", f"{conv} vs {dense}",
                claims.paired_differences(acc.get(conv, {}), acc.get(dense, {})),
            ))
    return rows


def less_sensitive(ctx) -> list[dict]:
    rows = []
    for transform, what in (("shift", "position"), ("scale", "scale")):
        drops = position_scale.relative_drops(ctx, transform)
        arch = {v: position_scale.architecture(ctx, v) for v in drops}
        for conv in [v for v in drops if arch[v] == "convolutional"]:
            for dense in [v for v in drops if arch[v] == "dense"]:
                # Positive: the CNN loses a smaller share of its accuracy than the MLP.
                rows.append(claims.claim_row(
                    f"the CNN is less sensitive to {what}", f"{conv} vs {dense}",
                    claims.paired_differences(drops[dense], drops[conv]),
                ))
    return rows


def optimizations_help(ctx, acc) -> list[dict]:
    rows = []
    bases = study_figures.baselines(ctx.study, ctx.table)
    for family, base in bases.items():
        for name in ctx.table[ctx.table.model == family].variant:
            key = ctx.study.variants[name].optimization
            if key:
                what = claims.OPTIMIZATIONS.get(key, key)
                rows.append(claims.claim_row(
                    f"{what} improves test accuracy", f"{family}: {name} vs {base}",
                    claims.paired_differences(acc.get(name, {}), acc.get(base, {})),
                ))
    return rows


def claims_table(ctx) -> pd.DataFrame:
    def build():
        acc = test_accuracy(ctx)
        rows = [*cnn_against_mlp(ctx, acc), *less_sensitive(ctx), *optimizations_help(ctx, acc)]
        return pd.DataFrame(rows, columns=claims.COLUMNS)

    return ctx.memo("claims", build)


def _points(value: float) -> str:
    return "" if math.isnan(value) else f"{value:+.2f}"


@section("claims", "What the study shows: the lecture's claims", order=5)
def render(ctx) -> list[str]:
    table = claims_table(ctx)
    rows = [
        {
            "claim": r.claim,
            "compared": r.model,
            "seeds": r.n_seeds,
            "effect (points)": _points(r.effect_mean),
            "95% interval": "" if math.isnan(r.ci_low) else f"[{r.ci_low:+.2f}, {r.ci_high:+.2f}]",
            "verdict": r.verdict,
        }
        for r in table.itertuples()
    ]
    css = {claims.HOLDS: "", claims.CONTRADICTED: "failed"}
    return [
        html.paragraph(
            "Each effect is a difference paired by seed, in percentage points: test accuracy for the CNN and the "
            "optimizations, the share of accuracy lost under shifts or rescaling for sensitivity (positive: the CNN "
            "loses less). The interval is the 95% Student t interval of the mean paired difference. A claim holds "
            "when the whole interval is above zero, is contradicted when it is below zero, and is inconclusive "
            "otherwise; with one seed there is no interval, and no verdict.",
            "note",
        ),
        html.table(
            rows, [css.get(r["verdict"], "partial") for r in rows], text_columns=("claim", "compared", "verdict")
        ),
    ]
