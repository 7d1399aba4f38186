"""The learning-rate sweep: validation accuracy at each rate, and the rate chosen for each family."""

from __future__ import annotations

import math
from pathlib import Path

from cnnlab.figures import plt
from cnnlab.report import html
from cnnlab.report.registry import Unavailable, figure, section
from cnnlab.report.runs import FINISHED, collect_runs
from cnnlab.study.studies import load_study, variant_composer
from cnnlab.study.tuning import choose


def sweep(ctx):
    """(sweep study, its records) for a sweep study or a study tuned by one; None otherwise."""

    def find():
        if ctx.study.sweep_key:
            return ctx.study, ctx.records
        if ctx.study.tune_lr:
            study = load_study(ctx.study.tune_lr, Path(ctx.conf_dir))
            try:
                return study, collect_runs(ctx.client, study, with_history=False)
            except Exception as e:  # the sweep's experiment is not in this store
                raise Unavailable(f"the sweep study '{study.name}' has no runs in this store ({e})") from None
        return None

    return ctx.memo("sweep", find)


def val_accuracy(records) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in records:
        if r.state == FINISHED:
            out.setdefault(r.variant, []).append(r.metric("best_val_acc"))
    return out


def chosen(ctx) -> dict:
    found = sweep(ctx)
    if found is None:
        raise Unavailable("this study neither is a learning-rate sweep nor takes its rates from one (tune_lr)")
    study, records = found
    compose = variant_composer(study, Path(ctx.conf_dir))
    return ctx.memo("chosen rates", lambda: choose(study, val_accuracy(records), compose))


@section("tuning", "Learning rates, chosen on validation", order=15)
def render(ctx) -> list[str]:
    rates = chosen(ctx)
    study, _ = sweep(ctx)
    rows = [
        {
            "family": family,
            "swept variant": e["variant"],
            "optimizer": e["optimizer"].rsplit(".", 1)[-1],
            "chosen": f"{e['setting']} = {e['value']}",
            "validation accuracy at each value": ", ".join(
                f"{v}: {'diverged' if math.isnan(a) else f'{100 * a:.1f}%'}" for v, a in e["candidates"].items()
            ),
            "how clear": how_clear(e, study.sweep_tie_points),
        }
        for family, e in rates.items()
    ]
    who = "this study's" if study is ctx.study else f"the sweep study '{study.name}', whose"
    return [
        html.paragraph(
            f"Each family's baseline was trained at several learning rates in {who} runs (under a schedule, the "
            "rate it starts from); the rate with the best validation accuracy (mean over the sweep's seeds) is the "
            "rate of every variant of the family that uses the same optimizer (the variants with their own "
            f"optimizer, such as Adam, keep their own rate). Rates within {study.sweep_tie_points:g} points of the "
            "best are a tie, which goes to the first the sweep lists (it lists its rates from the smallest, the "
            "safer side). The test split plays no part in the choice.",
            "note",
        ),
        html.table(rows, text_columns=tuple(rows[0]) if rows else ()),
    ]


def how_clear(entry: dict, tie_points: float) -> str:
    """Whether the chosen value is clearly ahead, in words: its lead, or the tie and how it was broken."""
    lead, tied = entry.get("lead", math.nan), entry.get("tie") or []
    if entry.get("value") is None:
        return "no finished run"
    if math.isnan(lead):
        return "the only value that finished"
    if len(tied) > 1:
        return (f"a tie: {', '.join(map(str, tied))} within {tie_points:g} points of the best "
                f"({entry['best']}); broken toward the first listed, {entry['value']}")
    return f"ahead of the next by {lead:.1f} points (a tie would be within {tie_points:g})"


@figure("lr_sweep", "Learning-rate sweep", section="tuning", caption="""Validation accuracy (best epoch,
    mean over seeds) of each family's baseline at each learning rate of the sweep; the star marks the
    rate chosen.""")
def draw(ctx):
    rates = chosen(ctx)
    if not rates:
        raise Unavailable("the sweep has no finished run yet")
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for i, (family, e) in enumerate(rates.items()):
        points = sorted((float(v), a) for v, a in e["candidates"].items())
        ax.plot([p[0] for p in points], [100 * p[1] for p in points], marker="o", color=f"C{i}", label=family.upper())
        best = e["candidates"][str(e["value"])]
        ax.plot([float(e["value"])], [100 * best], marker="*", ms=16, color=f"C{i}", ls="none")
    ax.set_xscale("log")
    ax.set_xlabel(next(iter(rates.values()))["setting"])
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return fig
