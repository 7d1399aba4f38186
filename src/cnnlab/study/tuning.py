"""Each variant's own hyperparameter, chosen on the validation split by a tuning study.

A study's `tuning:` section is part of its analysis plan: for each tuned variant, the setting it
tunes and the grid of values (`grids`), and the tie rule (`tie_points`). The tuning study it names
(`tuning.study`, a study with `sweep:`) trains every tuned variant once per value of its grid,
each point at the tuning study's own seeds and budget. For each tuned variant the value
with the best mean validation accuracy wins, unless another is within `tie_points` of it: such a
tie goes to the value listed first among the tied ones. The study files list learning rates from
the smallest, so a tie goes to the safer rate, and regularization and augmentation strengths from
the strongest, so a tie goes to the most regularized model that validates as well as the best
(the one-standard-error rule of Breiman et al. 1984 picks the same way). A value chosen at either
end of its grid is flagged (`edge`): the best may lie beyond it. The study's runs of that variant
then train at the chosen value; the test split plays no part in the choice.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from cnnlab.atomic import write_text
from cnnlab.errors import UserError

CHOSEN_FILE = "chosen.json"  # in results/<tuning study>/


@dataclass(frozen=True)
class Grid:
    """What one variant tunes: `key` over `values`; or, with `same_as`, the value another variant's grid chose."""

    key: str = ""
    values: tuple = ()
    same_as: str = ""

    def describe(self) -> str:
        if self.same_as:
            return f"the value chosen for {self.same_as}"
        return f"{self.key} in {{{', '.join(format_value(v) for v in self.values)}}}"


@dataclass(frozen=True)
class Tuning:
    """A study's tuning plan (its `tuning:` section)."""

    study: str | None = None  # the tuning study that runs the grids
    tie_points: float = 1.0
    grids: dict = None  # variant -> Grid
    from_record: str | None = None  # or: the values a recorded study chose (docs/results/<name>.json)

    def grid_of(self, variant: str) -> Grid | None:
        return (self.grids or {}).get(variant)


def format_value(value) -> str:
    """A grid value as the report writes it: 0.003 as 3e-03 only where that is shorter."""
    if isinstance(value, float):
        plain, sci = f"{value:g}", f"{value:.0e}"
        return sci if len(sci) < len(plain) and float(sci) == value else plain
    return str(value)


def choose(sweep, val_acc: dict[str, list[float]], tie_points: float, grids: dict) -> dict:
    """variant -> {setting, value, best, tie, lead, edge, candidates: {value: mean val acc}}.

    best: the value with the best mean; lead: its margin over the next best, in points; tie: the
    values within tie_points of the best (more than one: the first listed is chosen); edge: "first"
    or "last" when the chosen value is the first or last its grid lists (None inside it). A variant
    whose grid is `same_as` another gets that one's entry, with `same_as` naming it.

    val_acc: tuning point -> the best validation accuracy of each of its finished seeds.
    """
    chosen: dict[str, dict] = {}
    for name, point in sweep.variants.items():
        if not point.sweep_of:
            continue
        scores = [v for v in val_acc.get(name, []) if not math.isnan(v)]  # NaN: the run diverged
        entry = chosen.setdefault(point.sweep_of, {
            "setting": point.sweep_key, "value": None, "candidates": {},
            "grid": [format_value(v) for v in grids[point.sweep_of].values],
        })
        if name in val_acc:
            entry["candidates"][format_value(point.sweep_value)] = statistics.fmean(scores) if scores else math.nan
    value_of = {format_value(p.sweep_value): p.sweep_value for p in sweep.variants.values()
                if p.sweep_value is not None}
    for entry in chosen.values():
        finite = {v: a for v, a in entry["candidates"].items() if not math.isnan(a)}
        if not finite:
            continue
        ranked = sorted(finite.values(), reverse=True)
        best = max(finite, key=finite.get)  # the first listed of equal means
        tied = [v for v, a in finite.items() if 100 * (finite[best] - a) <= tie_points]
        grid = entry["grid"]
        position = grid.index(tied[0])
        entry.update(
            best=value_of[best], value=value_of[tied[0]], tie=[value_of[v] for v in tied],
            lead=100 * (ranked[0] - ranked[1]) if len(ranked) > 1 else math.nan,
            edge="first" if position == 0 else "last" if position == len(grid) - 1 else None,
        )
    for variant, grid in grids.items():
        if grid.same_as and grid.same_as in chosen:
            chosen[variant] = {**chosen[grid.same_as], "same_as": grid.same_as}
    return chosen


def write_choices(sweep, parent, result_files: list[str], out: str | Path) -> dict:
    """Choose from the tuning study's result.json files and write the choice as JSON (the workflow's step)."""
    val_acc: dict[str, list[float]] = {}
    for f in result_files:
        result = json.loads(Path(f).read_text())
        val_acc.setdefault(result["variant"], []).append(float(result["best_val_acc"]))
    chosen = choose(sweep, val_acc, parent.tuning.tie_points, parent.tuning.grids)
    failed = [v for v, e in chosen.items() if e["value"] is None]
    if failed:
        raise UserError(
            f"Every run of the tuning study '{sweep.name}' for {', '.join(failed)} diverged or failed, so no value "
            "can be chosen; add smaller values to its grid (tuning.grids in the study file)."
        )
    write_text(out, json.dumps(chosen, indent=2) + "\n")
    return chosen


def read_choices(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(
            f"The tuned values {path} cannot be read ({e}); run the workflow again to redo the tuning study's choice."
        ) from None


def tuned_override(variant: str, chosen: dict, explicit: list[str]) -> tuple[str, object] | None:
    """(setting, value) a run of `variant` takes from the tuning, or None when none applies to it."""
    entry = chosen.get(variant)
    if entry is None or entry.get("value") is None:
        return None
    if any(o.split("=", 1)[0].lstrip("+") == entry["setting"] for o in explicit):
        return None  # the command line chose its own value
    return entry["setting"], entry["value"]
