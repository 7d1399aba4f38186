"""Learning rates chosen on the validation split by a sweep study, and handed to the runs of another.

A sweep study (`sweep:` in its study file) trains each of its parent's listed variants at several
values of one setting. For each of those variants the value with the best mean validation
accuracy wins, unless another is within the sweep's `tie_points` of it: such a tie goes to the
value listed first among the tied ones (the sweep lists its learning rates from the smallest, the
safer side), and the choice records it. The study that names the sweep (`tune_lr: <sweep>`) then
trains every variant of the same family and the same optimizer class at that value, unless the
variant sets it itself. The test split plays no part in the choice.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from cnnlab.atomic import write_text
from cnnlab.errors import UserError
from cnnlab.models import family_of


def choose(sweep, val_acc: dict[str, list[float]], compose) -> dict:
    """family -> {setting, value, optimizer, variant, candidates: {value: mean val acc}, best, lead, tie}.

    best: the value with the best mean; lead: its margin over the next best, in points; tie: the
    values within the sweep's tie_points of the best (more than one: the first listed is chosen).

    val_acc: sweep variant -> the best validation accuracy of each of its finished seeds;
    compose: variant name -> that variant's composed config (cnnlab.study.studies.compose_config).
    """
    chosen: dict[str, dict] = {}
    for name, variant in sweep.variants.items():
        if not variant.sweep_of or name not in val_acc:
            continue
        scores = [v for v in val_acc[name] if not math.isnan(v)]  # NaN: the run diverged
        cfg = compose(name)
        family = family_of(cfg.model)
        entry = chosen.setdefault(family, {
            "setting": sweep.sweep_key, "optimizer": str(cfg.optimizer["_target_"]), "variant": variant.sweep_of,
            "value": None, "candidates": {},
        })
        entry["candidates"][str(variant.sweep_value)] = statistics.fmean(scores) if scores else math.nan
    for entry in chosen.values():
        finite = {v: a for v, a in entry["candidates"].items() if not math.isnan(a)}
        if not finite:
            continue
        ranked = sorted(finite.values(), reverse=True)
        best = max(finite, key=finite.get)  # the first listed of equal means
        tied = [v for v, a in finite.items() if 100 * (finite[best] - a) <= sweep.sweep_tie_points]
        value_of = {str(v.sweep_value): v.sweep_value for v in sweep.variants.values()}
        entry.update(
            best=value_of[best], value=value_of[tied[0]], tie=[value_of[v] for v in tied],
            lead=100 * (ranked[0] - ranked[1]) if len(ranked) > 1 else math.nan,
        )
    return chosen


def write_learning_rates(sweep, result_files: list[str], compose, out: str | Path) -> dict:
    """Choose from the sweep's result.json files and write the choice as JSON (the workflow's step)."""
    val_acc: dict[str, list[float]] = {}
    for f in result_files:
        result = json.loads(Path(f).read_text())
        val_acc.setdefault(result["variant"], []).append(float(result["best_val_acc"]))
    chosen = choose(sweep, val_acc, compose)
    if not any(e["value"] is not None for e in chosen.values()):
        raise UserError(
            f"Every run of the sweep study '{sweep.name}' diverged or failed, so no learning rate can be chosen; "
            "add smaller values to its sweep."
        )
    write_text(out, json.dumps(chosen, indent=2) + "\n")
    return chosen


def read_learning_rates(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(
            f"The chosen learning rates {path} cannot be read ({e}); run the workflow again to redo the sweep's choice."
        ) from None


def tuned_override(cfg, chosen: dict, explicit: list[str]) -> tuple[str, object] | None:
    """(setting, value) a run takes from the sweep, or None when none applies to it."""
    entry = chosen.get(family_of(cfg.model))
    if entry is None or entry["value"] is None or str(cfg.optimizer["_target_"]) != entry["optimizer"]:
        return None
    if any(o.split("=", 1)[0].lstrip("+") == entry["setting"] for o in explicit):
        return None  # the variant, its study or the command line chose its own value
    return entry["setting"], entry["value"]
