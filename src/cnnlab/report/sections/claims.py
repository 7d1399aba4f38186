"""The lecture's claims with their verdicts: the report's first section, and claims.csv.

Rows: the CNN beats the MLP (the best of each architecture, chosen on validation, and the two
baselines); the CNN is less sensitive to position, and to scale (Problema 2's networks); and each
optimization a variant adds (`optimization:` in the study file) improves test accuracy over the
baseline of its family in its regime. Every effect is paired by seed; every row says its regime;
the verdicts are adjusted over the family of claims (cnnlab.report.claims has the arithmetic).
"""

from __future__ import annotations

import math

import pandas as pd

from cnnlab.report import claims, html, study_figures
from cnnlab.report.claim_figures import forest_figure
from cnnlab.report.registry import figure, section
from cnnlab.report.runs import FINISHED
from cnnlab.report.sections import position_scale, tuning
from cnnlab.study import plan
from cnnlab.study.studies import FULL


def test_accuracy(ctx) -> dict[str, dict[int, float]]:
    """variant -> seed -> test accuracy of its finished runs."""
    acc: dict[str, dict[int, float]] = {}
    for r in ctx.records:
        if r.state == FINISHED and not math.isnan(r.metric("test/acc")):
            acc.setdefault(r.variant, {})[r.seed] = r.metric("test/acc")
    return acc


def smallest_effect(ctx) -> float:
    """delta, in points: the study's report.smallest_effect_points."""
    return plan.smallest_effect(ctx.study)


def adjustment(ctx) -> str:
    """The study's report.adjustment (cnnlab.report.claims.ADJUSTMENTS)."""
    return plan.adjustment(ctx.study)


def regime_of(ctx, *variants: str) -> str:
    return "/".join(dict.fromkeys(ctx.study.variants[v].regime for v in variants))


def best_on_validation(ctx, architecture: str, regime: str = FULL) -> str | None:
    """The variant of one architecture with the best mean validation accuracy, among one regime's
    (the full data's by default: a data-limited variant is not a candidate for 'best')."""
    in_regime = ctx.table.variant.map(lambda v: ctx.study.variants[v].regime == regime)
    rows = ctx.table[(ctx.table.architecture == architecture) & (ctx.table.n_runs > 0) & in_regime]
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
                regime_of(ctx, conv, dense), smallest_effect(ctx),
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
                    regime_of(ctx, conv, dense), smallest_effect(ctx),
                ))
    return rows


def optimizations_help(ctx, acc) -> list[dict]:
    """One row per variant that adds one optimization, against the baseline of its family and regime."""
    rows = []
    for family, name in zip(ctx.table.model, ctx.table.variant, strict=True):
        key = ctx.study.variants[name].optimization
        base = ctx.study.baseline_of(name)
        if key and base:
            what = claims.OPTIMIZATIONS.get(key, key)
            rows.append({**claims.claim_row(
                f"{what} improves test accuracy", f"{family}: {name} vs {base}",
                claims.paired_differences(acc.get(name, {}), acc.get(base, {})),
                regime_of(ctx, name, base), smallest_effect(ctx),
            ), "setting": tuning.setting_of(ctx, name)})
    return rows


def claims_table(ctx) -> pd.DataFrame:
    def build():
        acc = test_accuracy(ctx)
        rows = [*cnn_against_mlp(ctx, acc), *less_sensitive(ctx), *optimizations_help(ctx, acc)]
        return pd.DataFrame(claims.adjust(rows, adjustment(ctx)), columns=[*claims.COLUMNS, "setting"])

    return ctx.memo("claims", build)


def _points(value: float) -> str:
    return "" if math.isnan(value) else f"{value:+.2f}"


def regimes_paragraph(ctx) -> str:
    """Which regime each claim is tested in, and why: the study file's words for each regime used,
    and whether the runs keep what each regime promises (regime_checks)."""
    used = [ctx.study.regimes[name] for name in dict.fromkeys(v.regime for v in ctx.study.variants.values())
            if name in ctx.study.regimes]
    if len(used) < 2 and not any(r.about for r in used):
        return ""
    parts = []
    for r in used:
        seeds = r.seeds or ctx.study.seeds
        parts.append(f"{r.name} ({len(seeds)} seed{'s' if len(seeds) != 1 else ''}): {r.about or 'no description'}")
    return " ".join([
        "Each claim is tested in the regime its mechanism addresses, against that regime's own baseline; the "
        "regime column says which.", *(f"{p.rstrip('.')}." for p in parts), *regime_checks(ctx.study, ctx.table),
    ])


def regime_checks(study, table: pd.DataFrame) -> list[str]:
    """One sentence per baseline of a regime that promises a train - validation gap (baseline_gap_points):
    the gap its finished runs show, and whether the promise is kept."""
    gaps = dict(zip(table.variant, table.gap_mean, strict=True))
    out = []
    for v in study.variants.values():
        promised = study.regimes[v.regime].baseline_gap_points if v.regime in study.regimes else None
        if not v.baseline or promised is None:
            continue
        gap = 100 * gaps.get(v.name, math.nan)
        if math.isnan(gap):
            out.append(f"{v.name} has no finished run yet, so its gap (promised: at least {promised:g} points) "
                       "is not known.")
        elif gap >= promised:
            out.append(f"{v.name} overfits as the {v.regime} regime promises: train - validation gap "
                       f"{gap:+.1f} points (at least {promised:g}).")
        else:
            out.append(f"{v.name} does NOT overfit as the {v.regime} regime promises: train - validation gap "
                       f"{gap:+.1f} points, under {promised:g}, so its claims are tested where the baseline "
                       "has little overfitting to fight.")
    return out


def explanation(ctx, n_tested: int) -> str:
    delta = smallest_effect(ctx)
    return (
        "Each effect is a difference paired by seed, in percentage points: test accuracy for the CNN and the "
        "optimizations, the accuracy kept above chance under shifts or rescaling for sensitivity (positive: the CNN "
        "keeps more); the interval is the Student t interval of the mean paired difference. The smallest effect of "
        f"interest is delta = {delta:g} point{'s' if delta != 1 else ''}: a smaller difference does not matter, "
        "whatever its sign. One rule reads each verdict from an interval: holds when it lies above 0, contradicted "
        "when below; negligible when it lies inside (-delta, +delta) (an equivalence test), and 'holds, under delta' "
        "or 'contradicted, under delta' when both; inconclusive otherwise (the seeds cannot tell a zero effect from "
        "one that matters). With one seed there is no interval: one seed decides nothing. 'Alone' reads each "
        "claim's 95% interval by itself; at 95% each, one false finding in twenty claims is expected by chance, so "
        f"the verdict column reads it adjusted for the family of {n_tested} claims, by "
        f"{METHODS[adjustment(ctx)]} An adjustment only widens a claim's interval (or raises its p-values), so an "
        "adjusted verdict never shows a fact the claim alone does not; Holm's verdict is beside it for comparison. "
        "The p-values and the adjusted intervals are in claims.csv."
    )


METHODS = {
    "fcr": "false-coverage-rate adjusted intervals (Benjamini and Yekutieli 2005): with R of the m claims selected by "
           "Benjamini-Hochberg at 5% on their tests of a difference, every claim's interval is the (1 - R x 0.05 / m) "
           "one, and of the selected claims' intervals at most 5% are expected to miss their effect.",
    "holm": "Holm's step-down procedure over one family holding every claim's test of a difference and its "
            "equivalence test, at a family-wise error of 5%: the chance that any finding here is wrong is at most 5%.",
    "fdr_bh": "the Benjamini-Hochberg procedure over one family holding every claim's test of a difference and its "
              "equivalence test, at a false-discovery rate of 5%: of the findings, at most 5% are expected to be "
              "wrong.",
    "bonferroni": "Bonferroni's simultaneous intervals, each at 1 - 0.05 / m: all of them cover their effects at "
                  "once with 95% probability.",
    "none": "nothing: each claim is read alone, at 95%.",
}


def _interval(low: float, high: float) -> str:
    return "" if math.isnan(low) else f"[{low:+.2f}, {high:+.2f}]"


def plan_paragraph(ctx) -> str:
    """The analysis plan as the study file fixes it, its hash, and whether it is the plan the runs started with."""
    current = plan.plan(ctx.study, ctx.conf_dir)
    started = plan.read_plan(ctx.out.parent / "plan.json")
    seeds = "; ".join(f"{r}: {len(s)} seed{'s' if len(s) != 1 else ''} ({', '.join(map(str, s))})"
                      for r, s in current["seeds"].items())
    tuned = current["tuning"]
    text = (f"The analysis plan (fixed in conf/study/{ctx.study.name}.yaml before the runs; hash "
            f"{plan.plan_hash(current)}): {len(current['claims'])} claims as listed below; adjustment "
            f"{claims.ADJUSTMENT_NAMES[current['adjustment']]} at {current['error_rate']:.0%}; smallest effect of "
            f"interest {current['smallest_effect_points']:g} point; seeds {seeds}")
    if tuned and tuned["grids"]:
        text += (f"; {len(tuned['grids'])} tuned variants, each on its own grid (the tuning section), ties within "
                 f"{tuned['tie_points']:g} points")
    text += "."
    if started is None:
        return text + " No plan was fixed when this study's runs started (results/<study>/plan.json is missing)."
    if started.get("definition_hash") != plan.definition_hash(ctx.study, ctx.conf_dir):
        return text + (f" THE STUDY FILE HAS CHANGED since the runs started (plan hash then {started['plan_hash']}, "
                       f"fixed {started['fixed_at']}): these verdicts do not follow a plan fixed before the runs.")
    return text + f" It is the plan fixed when the runs started ({started['fixed_at']})."


@section("claims", "What the study shows: the lecture's claims", order=5)
def render(ctx) -> list[str]:
    table = claims_table(ctx)
    adjusted = f"verdict ({claims.ADJUSTMENT_NAMES[adjustment(ctx)]})"  # the heading names the adjustment
    rows = [
        {
            "claim": r.claim,
            "compared": r.model,
            "setting": r.setting if isinstance(r.setting, str) else "",
            "regime": r.regime,
            "seeds": r.n_seeds,
            "effect (points)": _points(r.effect_mean),
            "95% interval": _interval(r.ci_low, r.ci_high),
            "alone": r.unadjusted_verdict,
            "adjusted interval": _interval(r.ci_low_adjusted, r.ci_high_adjusted),
            adjusted: r.verdict,
            "Holm": r.holm_verdict,
        }
        for r in table.itertuples()
    ]
    css = {claims.HOLDS: "", claims.HOLDS_SMALL: "", claims.NEGLIGIBLE: "", claims.CONTRADICTED: "failed",
           claims.CONTRADICTED_SMALL: "failed"}
    tested = int((table.n_seeds >= 2).sum())
    regimes = regimes_paragraph(ctx)
    return [
        html.paragraph(plan_paragraph(ctx), "note"),
        html.table(
            rows, [css.get(r[adjusted], "partial") for r in rows],
            text_columns=("claim", "compared", "setting", "regime", "alone", adjusted, "Holm"),
        ),
        html.details("How the claims are tested", [
            html.paragraph(explanation(ctx, tested), "note"),
            *([html.paragraph(regimes, "note")] if regimes else []),
        ]),
    ]


@figure("claims_forest", "The claims at a glance", section="claims", lead=True, caption="""Every claim with an
    interval: the effect (dot), its 95% interval alone (thin line) and its interval adjusted for the family
    (thick line, coloured by the adjusted verdict); the grey band is the smallest effect of interest, +-delta.""")
def draw_forest(ctx):
    return forest_figure(claims_table(ctx).to_dict("records"))
