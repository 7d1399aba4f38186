"""What each optimization does to training, beyond the final accuracy.

z-score and batch normalization: how fast validation accuracy rises; augmentation and dropout:
the gap between accuracy on training images and on validation images; L1: how many first-layer
weights it drives to zero; L2: the weights' norm; the adaptive learning rate: the loss and how far
each epoch moves the weights. Each figure draws a family's baseline and the variant that adds that
optimization (its `optimization:` key), mean over seeds.
"""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import MaxNLocator

from cnnlab.figures import plt
from cnnlab.report import html, study_figures
from cnnlab.report.registry import Unavailable, figure, section
from cnnlab.report.runs import FINISHED, fetch_histories

KEYS = ("val/acc", "train/loss", "train_probe/acc", "weights/norm", "weights/first_layer_near_zero",
        "weights/update_norm")


def compared(ctx, optimizations: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """family -> {label: variant}: the baseline of the regime the optimizations are tested in (that of
    the first), then the variants adding each optimization in that regime."""
    out = {}
    finished = set(ctx.table[ctx.table.n_runs > 0].variant)
    for family in dict.fromkeys(ctx.table.model):
        adding = [name for name in ctx.table[(ctx.table.model == family) & ctx.table.variant.isin(finished)].variant
                  if ctx.study.variants[name].optimization in optimizations]
        base = ctx.study.baseline_of(adding[0]) if adding else None
        if base not in finished:
            continue
        variants = {"baseline": base}
        for name in adding:
            if ctx.study.baseline_of(name) == base:
                variants[ctx.study.variants[name].optimization] = name
        out[family] = variants
    return out


def curves(ctx, variant: str, key: str):
    """(epochs from 1, mean over the variant's finished seeds) of one per-epoch metric."""
    runs = [r for r in ctx.records if r.variant == variant and r.state == FINISHED]
    ctx.memo(f"histories of {variant}", lambda: fetch_histories(ctx.client, runs, keys=KEYS))
    epochs, mean, _, _ = study_figures.mean_curve(runs, key)
    return epochs + 1, mean


def panels(ctx, optimizations: tuple[str, ...], draw_family, title: str):
    families = compared(ctx, optimizations)
    if not families:
        names = ", ".join(optimizations)
        raise Unavailable(f"no family has both a finished baseline and a variant that adds {names}")
    fig, axes = plt.subplots(
        1, len(families), figsize=(5.4 * len(families), 3.8), dpi=100, squeeze=False, layout="constrained"
    )
    for ax, (family, variants) in zip(axes[0], families.items(), strict=True):
        draw_family(ax, family, variants)
        ax.set_title(f"{family.upper()}: {title}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    return fig


def epochs_to_reach(epochs, values, threshold: float) -> int | None:
    reached = [e for e, v in zip(epochs, values, strict=True) if v >= threshold]
    return int(reached[0]) if reached else None


@section("mechanisms", "Mechanisms: what each optimization does", order=25)
def render(ctx) -> list[str]:
    return [html.paragraph(
        "Each figure compares a family's baseline with the variant that adds one optimization, mean over seeds "
        "per epoch. Training-image accuracy is measured on a fixed set of training images in eval mode, like "
        "validation, so the gap between the two is what the network learned that does not carry over.",
        "note",
    )]


@figure("convergence", "Epochs to reach the baseline's accuracy", section="mechanisms", caption="""
    z-score normalization and batch normalization: validation accuracy per epoch; the dotted line is the
    baseline's final validation accuracy, and the legend gives the epochs each variant took to reach it.""")
def draw_convergence(ctx):
    def draw(ax, family, variants):
        base_epochs, base_acc = curves(ctx, variants["baseline"], "val/acc")
        threshold = float(base_acc[-1]) if len(base_acc) else np.nan
        for label, variant in variants.items():
            epochs, acc = curves(ctx, variant, "val/acc")
            reached = epochs_to_reach(epochs, acc, threshold)
            when = f"{reached} epochs" if reached else "not reached"
            ax.plot(epochs, 100 * acc, marker="o", ms=3, label=f"{label}: {when}")
        ax.axhline(100 * threshold, color="gray", ls=":", lw=1)
        ax.set_ylabel("validation accuracy (%)")

    return panels(ctx, ("zscore", "batch_norm"), draw, "speed of learning")


@figure("overfitting", "Train/validation gap", section="mechanisms", caption="""
    Data augmentation and dropout: accuracy on training images minus accuracy on validation images,
    per epoch (both in eval mode). A regularizer that works keeps the gap small.""")
def draw_overfitting(ctx):
    def draw(ax, family, variants):
        for label, variant in variants.items():
            epochs, train = curves(ctx, variant, "train_probe/acc")
            _, val = curves(ctx, variant, "val/acc")
            if len(epochs) and len(train) == len(val):
                ax.plot(epochs, 100 * (train - val), marker="o", ms=3, label=label)
        ax.set_ylabel("train - validation accuracy (points)")

    return panels(ctx, ("augmentation", "dropout"), draw, "train/validation gap")


@figure("sparsity", "Near-zero first-layer weights", section="mechanisms", caption="""
    L1 regularization: the share of first-layer weights whose magnitude is below 0.001, per epoch.""")
def draw_sparsity(ctx):
    def draw(ax, family, variants):
        for label, variant in variants.items():
            epochs, share = curves(ctx, variant, "weights/first_layer_near_zero")
            ax.plot(epochs, 100 * share, marker="o", ms=3, label=label)
        ax.set_ylabel("first-layer weights with |w| < 0.001 (%)")

    return panels(ctx, ("l1",), draw, "near-zero weights")


@figure("weight_norm", "Weight norm", section="mechanisms", caption="""
    L2 regularization: the Euclidean norm of all weight matrices and kernels, per epoch.""")
def draw_weight_norm(ctx):
    def draw(ax, family, variants):
        for label, variant in variants.items():
            epochs, norm = curves(ctx, variant, "weights/norm")
            ax.plot(epochs, norm, marker="o", ms=3, label=label)
        ax.set_ylabel("weight norm")

    return panels(ctx, ("l2",), draw, "weight norm")


@figure("adaptive_lr", "Loss and step size", section="mechanisms", caption="""
    The adaptive learning rate: training loss per epoch (solid) and, on the right axis, how far the
    epoch moved the weights (dashed, the norm of the change). The configured rate is constant for both;
    Adam scales each parameter's step by its own gradient history.""")
def draw_adaptive(ctx):
    def draw(ax, family, variants):
        right = ax.twinx()
        for i, (label, variant) in enumerate(variants.items()):
            color = f"C{i}"
            epochs, loss = curves(ctx, variant, "train/loss")
            _, moved = curves(ctx, variant, "weights/update_norm")
            ax.plot(epochs, loss, color=color, marker="o", ms=3, label=f"{label}: loss")
            right.plot(epochs, moved, color=color, ls="--", label=f"{label}: update norm")
        ax.set_ylabel("training loss")
        ax.set_yscale("log")
        right.set_ylabel("weight change per epoch (norm)")

    return panels(ctx, ("adaptive_lr",), draw, "loss and step size")
