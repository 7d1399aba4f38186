"""A study's analysis plan, fixed in its study file before its runs: the claims, how their verdicts
are adjusted, the smallest effect of interest, the seeds of each regime and the tuning grids.

The workflow writes the plan and its hash to results/<study>/plan.json once, before the first
training job (the init_tracking rule); the report prints both, and says so when the study file
has changed since; `bench.results_table record` refuses to record such a run. A verdict is
never improved afterwards by adding seeds or changing the rule: a new plan needs a new whole run.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

from cnnlab.atomic import write_text
from cnnlab.study.studies import CONF_DIR, Study, _merged, load_study

DEFAULT_ADJUSTMENT = "fcr"
DEFAULT_DELTA = 1.0  # points


def adjustment(study: Study) -> str:
    return str(study.report.get("adjustment", DEFAULT_ADJUSTMENT))


def smallest_effect(study: Study) -> float:
    return float(study.report.get("smallest_effect_points", DEFAULT_DELTA))


def claims(study: Study) -> list[dict]:
    """The family of claims the plan tests, as the study file defines them (the report derives the same)."""
    out = [{"claim": "the CNN beats the MLP", "compared": "the best of each on validation, full data"},
           {"claim": "the CNN beats the MLP", "compared": "the baselines"}]
    for what in ("position", "scale"):
        out.append({"claim": f"the CNN is less sensitive to {what}",
                    "compared": "each CNN against each MLP of " + ", ".join(study.report.get("sensitivity", []))})
    for v in study.variants.values():
        base = study.baseline_of(v.name)
        if v.optimization and base:
            out.append({"claim": f"{v.optimization} improves test accuracy", "compared": f"{v.name} vs {base}",
                        "regime": v.regime})
    return out


def plan(study: Study, conf_dir: Path = CONF_DIR) -> dict:
    """The plan as data: what the report prints and what its hash covers."""
    tuning = study.tuning
    tuning_study = load_study(tuning.study, conf_dir) if tuning and tuning.study else None
    return {
        "study": study.name,
        "claims": claims(study),
        "adjustment": adjustment(study),
        "error_rate": 0.05,
        "smallest_effect_points": smallest_effect(study),
        "seeds": {r: list(study.regimes[r].seeds or study.seeds) for r in study.regimes
                  if any(v.regime == r for v in study.variants.values())},
        "tuning": None if tuning is None else {
            "study": tuning.study,
            "from_record": tuning.from_record,
            "tie_points": tuning.tie_points,
            "seeds": list(tuning_study.seeds) if tuning_study else [],
            "grids": {v: ({"same_as": g.same_as} if g.same_as else {"key": g.key, "values": list(g.values)})
                      for v, g in (tuning.grids or {}).items()},
        },
        "acts_gap_points": float(study.report.get("acts_gap_points", 3.0)),
    }


def definition_hash(study: Study, conf_dir: Path = CONF_DIR) -> str:
    """A hash of everything the study files define for this study and its tuning study (comments aside):
    any change to a variant, a seed, a budget or the plan changes it."""
    names = [study.name, *([study.tuning.study] if study.tuning and study.tuning.study else [])]
    merged = {n: _merged(n, Path(conf_dir))[1] for n in names}
    return hashlib.sha256(json.dumps(merged, sort_keys=True, default=str).encode()).hexdigest()[:12]


def plan_hash(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def write_plan(study: Study, out: str | Path, conf_dir: Path = CONF_DIR) -> dict:
    """results/<study>/plan.json: the plan, its hash and the study files' hash, as they were at the start."""
    data = plan(study, conf_dir)
    record = {"plan": data, "plan_hash": plan_hash(data), "definition_hash": definition_hash(study, conf_dir),
              "fixed_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    write_text(out, json.dumps(record, indent=2) + "\n")
    return record


def read_plan(path: str | Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
