"""Figures over the whole study: ablation, learning curves, parameters vs accuracy, sensitivity."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from cnnlab.figures import plt
from cnnlab.padding import PADDING_MODES
from cnnlab.report.runs import FINISHED, RunRecord
from cnnlab.report.summary import sample_std
from cnnlab.study.studies import FULL

FAMILY_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
LINE_STYLES = ("-", "--", ":", "-.")
MODE_COLORS = dict(zip(PADDING_MODES, ("tab:blue", "tab:green", "tab:purple"), strict=True))
MAX_LABELLED = 24  # beyond this many variants, names and legends crowd the plot out


def family_color(table: pd.DataFrame, family: str) -> str:
    """Each family its own colour, in the order the study lists them."""
    families = list(dict.fromkeys(table.model))
    return FAMILY_COLORS[families.index(family) % len(FAMILY_COLORS)] if family in families else "tab:gray"


def baselines(study, table: pd.DataFrame, regime: str = FULL) -> dict[str, str]:
    """family -> the variant the study marks as its baseline (`baseline: true`) in a regime."""
    rows = table[table.variant.map(lambda v: study.variants[v].baseline and study.variants[v].regime == regime)]
    return {r.model: r.variant for r in rows.itertuples()}


def ablation_table(study, table: pd.DataFrame, records: list[RunRecord]) -> pd.DataFrame:
    """Change in test accuracy over the baseline of the variant's family and regime, paired by seed.

    Error: sample std of the per-seed differences; 0 for one shared seed.
    """
    acc = {(r.variant, r.seed): r.metric("test/acc") for r in records if r.state == FINISHED}
    rows = []
    for r in table.itertuples():
        base = study.baseline_of(r.variant)
        if study.variants[r.variant].baseline or base is None:
            continue
        regime = study.variants[r.variant].regime
        diffs = [acc[(r.variant, s)] - acc[(base, s)] for (v, s) in acc if v == r.variant and (base, s) in acc]
        rows.append(
            {
                "model": r.model,
                "variant": r.variant,
                # the regime's name where it is not the full data: each bar is against its own regime's baseline
                "adds": r.adds if regime == FULL else f"{r.adds} ({regime})",
                "combined": study.variants[r.variant].combined,
                "delta_mean": float(np.mean(diffs)) if diffs else math.nan,
                "delta_std": sample_std(diffs) if diffs else math.nan,
                "n_pairs": len(diffs),
            }
        )
    columns = ["model", "variant", "adds", "combined", "delta_mean", "delta_std", "n_pairs"]
    return pd.DataFrame(rows, columns=columns)


def ablation_figure(ablation: pd.DataFrame, table: pd.DataFrame):
    families = list(dict.fromkeys(ablation.model)) or ["(none)"]
    height = max(2.5, 0.45 * ablation.groupby("model").size().max() + 1.2) if len(ablation) else 2.5
    fig, axes = plt.subplots(
        1, len(families), figsize=(5.2 * len(families), height), dpi=100, squeeze=False, sharex=True,
        layout="constrained",
    )
    for ax, family in zip(axes[0], families, strict=False):
        rows = ablation[ablation.model == family]
        y = np.arange(len(rows))[::-1]
        colors = ["tab:red" if combined else family_color(table, family) for combined in rows.combined]
        ax.barh(y, 100 * rows.delta_mean.fillna(0), xerr=100 * rows.delta_std.fillna(0), color=colors, capsize=3)
        # Wrapped: a row label as long as "batch normalization and a global-average head" would
        # otherwise leave the bars no width.
        labels = [textwrap.fill(f"{a}{'' if n else ' (no data)'}", 28) for a, n in zip(rows.adds, rows.n_pairs,
                                                                                        strict=False)]
        ax.set_yticks(y, labels, fontsize=8)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(f"{family.upper()}: change over its baseline")
        ax.set_xlabel("test accuracy change (percentage points)")
        ax.grid(axis="x", alpha=0.3)
    return fig


def mean_curve(records: list[RunRecord], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, mean, min, max) over the seeds that logged each epoch."""
    by_epoch: dict[int, list[float]] = {}
    for r in records:
        for step, value in r.history.get(key, []):
            by_epoch.setdefault(step, []).append(value)
    epochs = np.array(sorted(by_epoch))
    values = [by_epoch[e] for e in epochs]
    return (
        epochs,
        np.array([np.mean(v) for v in values]),
        np.array([min(v) for v in values]),
        np.array([max(v) for v in values]),
    )


def learning_curves_figure(table: pd.DataFrame, records: list[RunRecord]):
    families = list(dict.fromkeys(table.model)) or ["(none)"]
    fig, axes = plt.subplots(
        2, len(families), figsize=(5.2 * len(families), 7), dpi=100, squeeze=False, layout="constrained"
    )
    for col, family in enumerate(families):
        variants = list(table[table.model == family].variant)
        cmap = plt.get_cmap("tab10" if len(variants) <= 10 else "viridis")
        for i, variant in enumerate(variants):
            runs = [r for r in records if r.variant == variant and r.history]
            color = cmap(i if len(variants) <= 10 else i / max(len(variants) - 1, 1))
            for row, key in enumerate(("val/acc", "val/loss")):
                epochs, mid, lo, hi = mean_curve(runs, key)
                if len(epochs) == 0:
                    continue
                ax = axes[row, col]
                ax.plot(
                    epochs + 1, mid, color=color, lw=1.4, label=variant, marker="o" if len(epochs) < 4 else None, ms=3
                )
                ax.fill_between(epochs + 1, lo, hi, color=color, alpha=0.15, lw=0)
        for row, key in enumerate(("validation accuracy", "validation loss")):
            ax = axes[row, col]
            ax.set_title(f"{family.upper()}: {key}")
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            if ax.lines and row == 0 and len(variants) <= MAX_LABELLED:
                ax.legend(fontsize=7, ncol=2 if len(variants) > 8 else 1)
    fig.suptitle("Mean over seeds; band: min to max", fontsize=9)
    return fig


def params_figure(table: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=100, layout="constrained")
    done = table[table.n_runs > 0]
    for family, rows in done.groupby("model"):
        ax.errorbar(
            rows.params.astype(float),
            100 * rows.test_acc_mean,
            yerr=100 * rows.test_acc_std,
            fmt="o",
            capsize=3,
            color=family_color(table, family),
            label=family.upper(),
        )
        if len(done) <= MAX_LABELLED:
            for r in rows.itertuples():
                ax.annotate(
                    r.variant,
                    (float(r.params), 100 * r.test_acc_mean),
                    fontsize=7,
                    xytext=(4, 3),
                    textcoords="offset points",
                )
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    ax.set_title("Problema 1: high dimensionality")
    ax.grid(alpha=0.3, which="both")
    if ax.lines:
        ax.legend()
    return fig


def sensitivity_figure(tables: dict, labels: dict[str, str]):
    """tables: network -> sensitivity table; accuracy kept (relative to its untouched images), one line style each."""
    fig, (ax_shift, ax_scale) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100, layout="constrained")
    styles = {kind: LINE_STYLES[i % len(LINE_STYLES)] for i, kind in enumerate(tables)}
    for kind, table in tables.items():
        kept = 100 * (1 - table.relative_drop)
        shift = table["transform"] == "shift"
        for mode in dict.fromkeys(table[shift]["mode"]):
            rows = shift & (table["mode"] == mode)
            ax_shift.plot(table[rows].amount, kept[rows], styles[kind], marker="o", ms=3, color=MODE_COLORS[mode],
                          label=f"{labels[kind]}, {mode}")
        scale = table["transform"] == "scale"
        zoom_in = scale & (table.amount >= 1)
        for mode in dict.fromkeys(table[scale & (table.amount < 1)]["mode"]):
            # Each zoom-out mode joins the zoom-in line at 1x.
            rows = (scale & (table.amount < 1) & (table["mode"] == mode)) | (zoom_in & (table.amount == 1))
            ax_scale.plot(table[rows].amount, kept[rows], styles[kind], marker="o", ms=3, color=MODE_COLORS[mode],
                          label=f"{labels[kind]}, zoom out: {mode}")
        ax_scale.plot(table[zoom_in].amount, kept[zoom_in], styles[kind], marker="o", ms=3, color="black",
                      label=f"{labels[kind]}, zoom in: crop")
    ax_shift.set_xlabel("shift (pixels)")
    ax_scale.set_xlabel("zoom factor (out: padded border; in: cropped)")
    for ax, title in ((ax_shift, "accuracy kept under shifts"), (ax_scale, "accuracy kept under zooms")):
        ax.set_ylabel("accuracy kept above chance (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle("Problema 2: " + ", ".join(f"{styles[k]} {labels[k]}" for k in tables), fontsize=9)
    return fig
