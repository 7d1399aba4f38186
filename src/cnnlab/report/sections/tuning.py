"""Each variant at its own best setting: the tuning study's grids, what they chose, and whether the
regularizers act (the dose and its response: validation accuracy and train - validation gap
against each strength)."""

from __future__ import annotations

import math
from pathlib import Path

from cnnlab.figures import plt
from cnnlab.report import html
from cnnlab.report.registry import Unavailable, figure, section
from cnnlab.report.runs import FINISHED, collect_runs
from cnnlab.study.studies import load_study, recorded_choices
from cnnlab.study.tuning import choose, format_value

# The regularizers the study must show acting: their train - validation gap at least this many
# points below the baseline's (the study's report.acts_gap_points).
DEFAULT_ACTS_POINTS = 3.0
REGULARIZERS = ("l1", "l2", "dropout")


def tuning_runs(ctx):
    """(tuning study, its records) for a tuning study or a study tuned by one; None otherwise."""

    def find():
        if ctx.study.is_sweep:
            return ctx.study, ctx.records
        if ctx.study.tuning_study:
            study = load_study(ctx.study.tuning_study, Path(ctx.conf_dir))
            try:
                return study, collect_runs(ctx.client, study, with_history=False)
            except Exception as e:  # the tuning study's experiment is not in this store
                raise Unavailable(f"the tuning study '{study.name}' has no runs in this store ({e})") from None
        return None

    return ctx.memo("tuning runs", find)


def chosen(ctx) -> dict:
    """variant -> the tuning's choice (cnnlab.study.tuning.choose), or the recorded study's values."""
    tuning = ctx.study.tuning
    if tuning is not None and tuning.from_record:
        return ctx.memo("chosen", lambda: recorded_choices(tuning.from_record))
    found = tuning_runs(ctx)
    if found is None:
        raise Unavailable("this study tunes no variant (no tuning: section in its study file)")
    study, records = found
    val = {}
    for r in records:
        if r.state == FINISHED:
            val.setdefault(r.variant, []).append(r.metric("best_val_acc"))
    return ctx.memo("chosen", lambda: choose(study, val, study.tuning.tie_points, study.tuning.grids))


def setting_of(ctx, variant: str) -> str:
    """How a claim names a variant's tuned value: 'regularization.l2 = 0.005, chosen on validation from 1e-04
    to 0.03'; empty where the variant is not tuned."""
    try:
        entry = chosen(ctx).get(variant)
    except Unavailable:
        return ""
    if not entry or entry.get("value") is None:
        return ""
    grid = sorted(float(v) for v in entry.get("grid") or [])
    where = f", chosen on validation from {format_value(grid[0])} to {format_value(grid[-1])}" if len(grid) > 1 else ""
    also = f" (as {entry['same_as']})" if entry.get("same_as") else ""
    edge = " (at the grid's edge)" if entry.get("edge") else ""
    return f"{entry['setting']} = {format_value(entry['value'])}{where}{also}{edge}"


def how_clear(entry: dict, tie_points: float) -> str:
    """Whether the chosen value is clearly ahead, in words: its lead, or the tie and how it was broken."""
    lead, tied = entry.get("lead", math.nan), entry.get("tie") or []
    if entry.get("value") is None:
        return "no finished run"
    if math.isnan(lead):
        return "the only value that finished"
    if len(tied) > 1:
        return (f"a tie: {', '.join(format_value(t) for t in tied)} within {tie_points:g} points of the best "
                f"({format_value(entry['best'])}); broken toward the first listed, {format_value(entry['value'])}")
    return f"ahead of the next by {lead:.1f} points (a tie would be within {tie_points:g})"


def _points_of(ctx, variant: str) -> list[tuple[float, object]]:
    """(value, record) of each finished tuning point of `variant`, in grid order."""
    study, records = tuning_runs(ctx)
    out = []
    for r in records:
        point = study.variants[r.variant]
        if point.sweep_of == variant and point.sweep_value is not None and r.state == FINISHED:
            out.append((float(point.sweep_value), r))
    return out


def _baseline_of(ctx, variant: str) -> tuple[float, float] | None:
    """(best validation accuracy in %, train - validation gap in points) of the untuned baseline `variant` is
    compared with: the means over the study's finished runs of it (None in a tuning study's own report)."""
    if ctx.study.is_sweep:
        return None
    base = ctx.study.baseline_of(variant)
    runs = [r for r in ctx.records if r.variant == base and r.state == FINISHED]
    if not runs:
        return None
    return (100 * sum(r.metric("best_val_acc") for r in runs) / len(runs), sum(gap(r) for r in runs) / len(runs))


def gap(record) -> float:
    """train - validation accuracy of a run's last validated epoch, in points."""
    return 100 * (record.metric("train_probe/acc") - record.metric("val/acc"))


def acts_points(ctx) -> float:
    return float(ctx.study.report.get("acts_gap_points", DEFAULT_ACTS_POINTS))


def main_study(ctx):
    return load_study(ctx.study.parent, Path(ctx.conf_dir)) if ctx.study.is_sweep else ctx.study


def regularizers_act(ctx) -> list[str]:
    """One sentence per regularizer variant: whether it narrows its baseline's train - validation gap by
    acts_gap_points at its chosen strength (the study's runs, all seeds), else at the strongest strength
    on its grid that still learns (the tuning runs), else that it cannot."""
    study = main_study(ctx)
    threshold = acts_points(ctx)
    gaps = dict(zip(ctx.table.variant, 100 * ctx.table.gap_mean, strict=True)) if not ctx.study.is_sweep else {}
    out = []
    for v in study.variants.values():
        if v.optimization not in REGULARIZERS or study.tuning is None or study.tuning.grid_of(v.name) is None:
            continue
        base = study.baseline_of(v.name)
        own, base_gap = gaps.get(v.name, math.nan), gaps.get(base, math.nan)
        if not math.isnan(own) and not math.isnan(base_gap) and base_gap - own >= threshold:
            out.append(f"{v.name} acts at its chosen strength: train - validation gap {own:.1f} points against "
                       f"{base}'s {base_gap:.1f} (means over the study's seeds).")
            continue
        ref = _baseline_of(ctx, v.name)
        points = _points_of(ctx, v.name)
        if ref is None or not points:
            out.append(f"{v.name}: whether it acts cannot be told yet (no finished tuning run of it, or no finished "
                       "run of its baseline).")
            continue
        ref_val, ref_gap = ref
        # A strength "still learns" while its validation accuracy keeps at least half of the baseline's above chance.
        learns = [(value, r) for value, r in points
                  if 100 * r.metric("best_val_acc") >= 10 + 0.5 * (ref_val - 10)]
        acting = [(value, r) for value, r in learns if ref_gap - gap(r) >= threshold]
        at_chosen = (f" (at its chosen strength: {own:.1f} against {base_gap:.1f})"
                     if not math.isnan(own) and not math.isnan(base_gap) else "")
        if acting:
            value, r = max(acting, key=lambda point: ref_gap - gap(point[1]))  # where it narrows the gap most
            out.append(f"{v.name} acts at another strength on its grid than validation chose{at_chosen}: at "
                       f"{format_value(value)} its gap is {gap(r):.1f} points (tuning run) against {base}'s "
                       f"{ref_gap:.1f}.")
        else:
            out.append(f"{v.name} cannot narrow its baseline's train - validation gap by {threshold:g} points at any "
                       f"strength on its grid that still learns ({base}'s gap {ref_gap:.1f} points){at_chosen}.")
    return out


STRENGTH_KEYS = ("regularization", "model.dropout", "augment")


def combined_sentence(ctx) -> str:
    """Which strengths the all-together variants use, and why they are not the limited regime's choices."""
    study = main_study(ctx)
    combined = [v for v in study.variants.values() if v.combined]
    if not combined:
        return ""
    fixed = {v.name: [o for o in study.overrides_for(v.name) if o.startswith(STRENGTH_KEYS)] for v in combined}
    listed = "; ".join(f"{name}: {', '.join(overrides) or 'none'}" for name, overrides in fixed.items())
    return (f"The all-together variants train on the full data, where in these short runs the baselines overfit by "
            f"a few points only (the gap column of the summary), so they keep light strengths fixed in the study "
            f"file ({listed}) rather than the limited regime's choices, which fight the gap of a baseline that "
            "all but memorizes 5,000 images; only their learning rate is tuned.")


def dropout_sentence(ctx) -> str:
    """Where each dropout variant drops units, as its runs were configured."""
    study = main_study(ctx)
    said = []
    for v in study.variants.values():
        if v.optimization != "dropout":
            continue
        params = next((r.params for r in ctx.records if r.variant == v.name and r.params), {}) if not \
            ctx.study.is_sweep else {}
        if study.model_choice(v.name) == "cnn":
            conv = params.get("model.conv_dropout", "0.0")
            said.append(f"{v.name} drops units element-wise after the hidden layer of its dense head, before its final "
                        f"dense layer (model.dropout, tuned), and after each block's pooling at "
                        f"model.conv_dropout = {conv}")
        else:
            said.append(f"{v.name} drops units element-wise after each hidden layer (model.dropout, tuned)")
    return ("Dropout as the lecture describes it, units of a layer ignored at random: " + "; ".join(said) + "."
            if said else "")


@section("tuning", "Each variant at its own best setting, chosen on validation", order=15)
def render(ctx) -> list[str]:
    entries = chosen(ctx)
    tuning = ctx.study.tuning
    if tuning.from_record:
        rows = [{"variant": v, "setting": e["setting"], "value": format_value(e["value"])} for v, e in entries.items()]
        return [
            html.paragraph(
                f"This study tunes nothing itself: each tuned variant trains at the value the recorded "
                f"'{tuning.from_record}' study chose on validation (docs/results/{tuning.from_record}.json).", "note"),
            html.table(rows, text_columns=("variant", "setting")),
        ]
    study, _ = tuning_runs(ctx)
    rows = [
        {
            "variant": variant,
            "tunes": e["setting"] + (f" (as {e['same_as']})" if e.get("same_as") else ""),
            "grid": ", ".join(e.get("grid") or []),
            "chosen": "–" if e["value"] is None else format_value(e["value"]),
            "validation accuracy at each value": ", ".join(
                f"{v}: {'diverged' if math.isnan(a) else f'{100 * a:.1f}%'}" for v, a in e["candidates"].items()
            ),
            "how clear": how_clear(e, tuning.tie_points),
            "edge": {"first": "the first its grid lists: widen it", "last": "the last its grid lists: widen it"}.get(
                e.get("edge"), ""),
        }
        for variant, e in entries.items()
    ]
    edges = [r["variant"] for r in rows if r["edge"]]
    who = "this tuning study's" if study is ctx.study else f"the tuning study '{study.name}', whose"
    parts = [
        html.paragraph(
            f"Every variant is compared at its own best setting: each tuned variant trained once per value of its "
            f"grid in {who} runs (seed{'s' if len(study.seeds) > 1 else ''} "
            f"{', '.join(map(str, study.seeds))}, apart from the study's own, so no choice is judged on the run that "
            "made it). The value with the best validation accuracy is the one the study trains; values within "
            f"{tuning.tie_points:g} points of the best are a tie, which goes to the first the grid lists: rates are "
            "listed from the smallest (a tie goes to the safer rate), strengths from the strongest (a tie goes to the "
            "most regularized model that validates as well as the best, as the one-standard-error rule picks). The "
            "test split plays no part in the choice. Learning rates are "
            "tuned on the full data with a short budget; regularization and augmentation strengths in the limited "
            "regime, with that regime's whole budget.",
            "note",
        ),
        html.table(rows, text_columns=tuple(rows[0]) if rows else ()),
    ]
    if edges:
        parts.append(html.paragraph(
            f"Chosen at the edge of its grid: {', '.join(edges)}. The best value may lie beyond the grid; widen it "
            "in the study file's tuning.grids and run the study again.", "failed"))
    for sentence in (combined_sentence(ctx), dropout_sentence(ctx)):
        if sentence:
            parts.append(html.paragraph(sentence, "note"))
    if not ctx.study.is_sweep:
        acts = regularizers_act(ctx)
        if acts:
            parts.append(html.paragraph(" ".join(acts), "note"))
    return parts


@figure("tuning_rates", "Learning rates, each variant's own", section="tuning", caption="""Validation
    accuracy (best epoch) of each rate-tuned variant at each learning rate of its grid, one panel per family;
    the star marks the rate chosen.""")
def draw_rates(ctx):
    return _draw(ctx, rates=True)


@figure("dose_response", "Dose and response: regularization and augmentation strengths", section="tuning",
        caption="""For each family (a row of panels per family: validation accuracy above, train - validation gap
    below) and each tuned strength: the response at each value of its grid (tuning runs, one seed), the dashed
    line the untuned baseline of the same regime (the study's runs, mean over seeds), the star the strength
    chosen on validation.""")
def draw_doses(ctx):
    return _draw(ctx, rates=False)


def _draw(ctx, rates: bool):
    found = tuning_runs(ctx)
    if found is None:
        raise Unavailable("this study runs no tuning study")
    study, _ = found
    entries = chosen(ctx)
    main = main_study(ctx)
    picked = {v: e for v, e in entries.items() if not e.get("same_as") and (e["setting"] == "optimizer.lr") == rates}
    if not picked or not any(_points_of(ctx, v) for v in picked):
        raise Unavailable(f"the tuning study has no finished {'rate' if rates else 'strength'} runs yet")
    families = list(dict.fromkeys(main.model_choice(v) for v in picked))
    if rates:
        fig, axes = plt.subplots(1, len(families), figsize=(5.2 * len(families), 4.0), dpi=100, squeeze=False,
                                 layout="constrained")
        for ax, family in zip(axes[0], families, strict=True):
            for i, (v, e) in enumerate(x for x in picked.items() if main.model_choice(x[0]) == family):
                pts = _points_of(ctx, v)
                ax.plot([p for p, _ in pts], [100 * r.metric("best_val_acc") for _, r in pts], marker="o",
                        color=f"C{i}", label=v)
                if e["value"] is not None:
                    best = next((r for p, r in pts if p == float(e["value"])), None)
                    if best is not None:
                        ax.plot([float(e["value"])], [100 * best.metric("best_val_acc")], marker="*", ms=15,
                                color=f"C{i}", ls="none")
            ax.set_xscale("log")
            ax.set_title(family.upper())
            ax.set_xlabel("learning rate (start of the cosine)")
            ax.set_ylabel("validation accuracy (%)")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
        return fig
    keys = list(dict.fromkeys(e["setting"] for e in picked.values()))
    fig, axes = plt.subplots(2 * len(families), len(keys), figsize=(3.4 * len(keys), 2.7 * 2 * len(families)),
                             dpi=100, squeeze=False, layout="constrained")
    for row, family in enumerate(families):
        for col, key in enumerate(keys):
            top, bottom = axes[2 * row][col], axes[2 * row + 1][col]
            variant = next((v for v, e in picked.items() if e["setting"] == key and main.model_choice(v) == family),
                           None)
            top.set_title(f"{family.upper()}: {key.rsplit('.', 1)[-1]}", fontsize=10)
            if variant is None:
                top.axis("off")
                bottom.axis("off")
                continue
            pts, ref, e = _points_of(ctx, variant), _baseline_of(ctx, variant), picked[variant]
            xs = [p for p, _ in pts]
            top.plot(xs, [100 * r.metric("best_val_acc") for _, r in pts], marker="o", color="C0")
            bottom.plot(xs, [gap(r) for _, r in pts], marker="o", color="C3")
            if ref is not None:
                top.axhline(ref[0], ls="--", color="0.5", label="baseline")
                bottom.axhline(ref[1], ls="--", color="0.5")
            chosen_pt = next((r for p, r in pts if e["value"] is not None and p == float(e["value"])), None)
            if chosen_pt is not None:
                top.plot([float(e["value"])], [100 * chosen_pt.metric("best_val_acc")], marker="*", ms=14,
                         color="C0", ls="none", label="chosen")
                bottom.plot([float(e["value"])], [gap(chosen_pt)], marker="*", ms=14, color="C3", ls="none")
            if xs and min(xs) > 0 and max(xs) / min(xs) >= 20:
                top.set_xscale("log")
                bottom.set_xscale("log")
            top.set_ylabel("val. accuracy (%)", fontsize=9)
            bottom.set_ylabel("gap (points)", fontsize=9)
            bottom.set_xlabel(key, fontsize=9)
            for ax in (top, bottom):
                ax.grid(alpha=0.3, which="both")
                ax.tick_params(labelsize=8)
            top.legend(fontsize=7)
    return fig
