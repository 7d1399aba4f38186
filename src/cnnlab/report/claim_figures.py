"""The answers as pictures: every claim's effect and interval (a forest plot), and each variant's test
accuracy with its seeds' spread. Drawn from plain rows, so the report draws them from its claims
table and `bench.results_table render` from a recorded study (docs/results/)."""

from __future__ import annotations

import math

import numpy as np

from cnnlab.figures import plt
from cnnlab.report.claims import (
    CONTRADICTED,
    CONTRADICTED_SMALL,
    HOLDS,
    HOLDS_SMALL,
    INCONCLUSIVE,
    NEGLIGIBLE,
)

VERDICT_COLORS = {
    HOLDS: "#1a9641",
    HOLDS_SMALL: "#a6d96a",
    NEGLIGIBLE: "#8c8c8c",
    CONTRADICTED_SMALL: "#fdae61",
    CONTRADICTED: "#d7191c",
    INCONCLUSIVE: "#2b83ba",
}


def _nan(value) -> float:
    return math.nan if value is None else float(value)


def claim_label(row: dict) -> str:
    """'dropout improves test accuracy (cnn, limited)', short enough for a row label."""
    claim, model, regime = row["claim"], str(row.get("model", "")), row.get("regime") or "full"
    family = model.split(":", 1)[0] if ":" in model else model
    claim = claim.replace(" improves test accuracy", "").replace("the CNN ", "CNN ")
    return f"{claim} ({family}, {regime})"


def forest_figure(rows: list[dict], title: str = "The lecture's claims: effect and interval"):
    """One line per claim with an interval: the effect (dot), its interval adjusted for the family (bar; the
    interval alone as a thin bar where they differ), the +-delta band, the verdict as the colour."""
    rows = [r for r in rows if not math.isnan(_nan(r.get("ci_low")))]
    height = max(2.5, 0.32 * len(rows) + 1.3)
    fig, ax = plt.subplots(figsize=(9.5, height), dpi=100, layout="constrained")
    if not rows:
        ax.text(0.5, 0.5, "no claim has an interval yet (one seed decides nothing)", ha="center", va="center")
        ax.axis("off")
        return fig
    y = np.arange(len(rows))[::-1]
    delta = _nan(rows[0].get("delta"))
    if not math.isnan(delta):
        ax.axvspan(-delta, delta, color="0.92", zorder=0, label=f"within ±δ = {delta:g} point")
    ax.axvline(0, color="black", lw=0.8, zorder=1)
    for yi, r in zip(y, rows, strict=True):
        color = VERDICT_COLORS.get(r.get("verdict"), "0.5")
        lo, hi = _nan(r.get("ci_low_adjusted")), _nan(r.get("ci_high_adjusted"))
        if math.isnan(lo):
            lo, hi = _nan(r["ci_low"]), _nan(r["ci_high"])
        ax.plot([lo, hi], [yi, yi], color=color, lw=3, solid_capstyle="butt", zorder=2)
        ax.plot([_nan(r["ci_low"]), _nan(r["ci_high"])], [yi, yi], color="black", lw=0.8, zorder=3)
        ax.plot([_nan(r["effect_mean"])], [yi], "o", color="black", ms=4, zorder=4)
    ax.set_yticks(y, [claim_label(r) for r in rows], fontsize=8)
    ax.set_xlabel("effect, percentage points\n(test accuracy; for sensitivity: the accuracy kept above chance)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    seen = list(dict.fromkeys(r.get("verdict") for r in rows))
    handles = [plt.Line2D([], [], color=VERDICT_COLORS.get(v, "0.5"), lw=3, label=v) for v in seen]
    if not math.isnan(delta):
        handles.append(plt.Rectangle((0, 0), 1, 1, color="0.92", label=f"±δ = {delta:g} point"))
    ax.legend(handles=handles, fontsize=7, loc="lower right", title="verdict (adjusted)", title_fontsize=7)
    return fig


def variants_figure(variants: list[dict], title: str = "Test accuracy of each variant, mean and spread over seeds"):
    """Per family (a panel each) and regime (grouped, the full data first): each variant's mean test
    accuracy with its seeds' standard deviation; the regime's baseline in grey."""
    families = list(dict.fromkeys(str(v.get("architecture") or v.get("model")) for v in variants))
    rows_of = {f: [v for v in variants if str(v.get("architecture") or v.get("model")) == f] for f in families}
    height = max(2.5, 0.3 * max((len(r) for r in rows_of.values()), default=1) + 1.4)
    fig, axes = plt.subplots(1, max(1, len(families)), figsize=(5.2 * max(1, len(families)), height), dpi=100,
                             squeeze=False, layout="constrained")
    for ax, family in zip(axes[0], families, strict=False):
        rows = sorted(rows_of[family], key=lambda v: (v.get("regime") != "full", v.get("regime") or ""))
        y = np.arange(len(rows))[::-1]
        means = [100 * _nan(v.get("test_acc_mean")) for v in rows]
        spreads = [100 * (_nan(v.get("test_acc_std")) if v.get("test_acc_std") is not None else 0) for v in rows]
        colors = ["0.6" if "baseline" in str(v.get("adds", "")) else ("tab:blue" if v.get("regime") == "full"
                  else "tab:orange") for v in rows]
        ax.barh(y, means, xerr=spreads, color=colors, capsize=2)
        ax.set_yticks(y, [f"{v['variant']} ({v.get('regime') or 'full'})" for v in rows], fontsize=8)
        finite = [m for m in means if not math.isnan(m)]
        if finite:
            ax.set_xlim(max(0, min(finite) - 8), min(100, max(finite) + 5))
        ax.set_xlabel("test accuracy (%)")
        ax.set_title({"dense": "MLP", "convolutional": "CNN"}.get(family, family.upper()), fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title + "; grey: each regime's baseline", fontsize=9)
    return fig
