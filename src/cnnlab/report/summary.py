"""The summary table: one row per variant, numbers aggregated over its finished seeds.

Spread over seeds is the sample standard deviation (ddof=1), the estimate of how much another
seed would move the result; with a single finished seed there is no spread to estimate and the
table shows 0. The same rule holds for the ablation's error bars.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cnnlab.report.runs import FAILED, FINISHED, RunRecord
from cnnlab.study.studies import Study

COLUMNS = [
    "variant",
    "model",
    "architecture",
    "adds",
    "n_seeds",
    "n_runs",
    "n_failed",
    "n_missing",
    "params",
    "first_layer_params",
    "test_acc_mean",
    "test_acc_std",
    "best_val_acc_mean",
    "train_probe_acc_mean",
    "gap_mean",
    "epochs",
    "train_seconds_mean",
    "images_per_sec_mean",
    "status",
    "errors",
]


def sample_std(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def mean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def variant_models(study: Study, conf_dir) -> dict[str, tuple[str, str]]:
    """variant -> (family, architecture), from its composed config: known before any run exists."""
    from cnnlab.models import family_of, network_class
    from cnnlab.study.studies import compose_config

    models = {}
    for variant in study.variants:
        model = compose_config(study=study.name, variant=variant, conf_dir=conf_dir).model
        models[variant] = (family_of(model), network_class(model).architecture)
    return models


def images_per_sec(record: RunRecord) -> float:
    """Training throughput of a run: its last epoch's, long past the first epoch's warm-up."""
    return record.metric("train/images_per_sec")


def status_of(n_ok: int, n_failed: int, n_seeds: int) -> str:
    if n_ok == n_seeds:
        return "ok"
    if n_ok == 0:
        return "failed" if n_failed else "missing"
    return "partial"


def summarize(study: Study, records: list[RunRecord], models: dict[str, tuple[str, str]],
              first_layer: dict[str, int] | None = None) -> pd.DataFrame:
    """models: variant -> (family, architecture), see variant_models."""
    first_layer = first_layer or {}
    rows = []
    for variant, spec in study.variants.items():
        runs = [r for r in records if r.variant == variant]
        ok = [r for r in runs if r.state == FINISHED]
        failed = [r for r in runs if r.state == FAILED]
        params = [r.metric("params") for r in ok] or [r.metric("params") for r in runs]
        acc = [r.metric("test/acc") for r in ok]
        rows.append(
            {
                "variant": variant,
                "model": models[variant][0],
                "architecture": models[variant][1],
                "adds": spec.adds or variant,
                "n_seeds": len(runs),
                "n_runs": len(ok),
                "n_failed": len(failed),
                "n_missing": len(runs) - len(ok) - len(failed),
                "params": next((int(p) for p in params if not math.isnan(p)), None),
                "first_layer_params": first_layer.get(variant),
                "test_acc_mean": mean(acc),
                "test_acc_std": sample_std(acc) if acc else math.nan,
                "best_val_acc_mean": mean([r.metric("best_val_acc") for r in ok]),
                # The last epoch's accuracy on training images minus on validation images (both in eval mode).
                "train_probe_acc_mean": mean([r.metric("train_probe/acc") for r in ok]),
                "gap_mean": mean([r.metric("train_probe/acc") - r.metric("val/acc") for r in ok]),
                "epochs": mean([r.metric("epochs") for r in ok]),
                "train_seconds_mean": mean([r.metric("job_seconds") for r in ok]),
                "images_per_sec_mean": mean([images_per_sec(r) for r in ok]),
                "status": status_of(len(ok), len(failed), len(runs)),
                "errors": "; ".join(f"seed {r.seed}: {r.error}" for r in runs if r.state != FINISHED),
            }
        )
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["params"] = table["params"].astype("Int64")
    table["first_layer_params"] = table["first_layer_params"].astype("Int64")
    return table


def runs_table(records: list[RunRecord]) -> pd.DataFrame:
    """Every (variant, seed) with its state: the detail behind the summary's counts."""
    return pd.DataFrame(
        [
            {
                "variant": r.variant,
                "seed": r.seed,
                "state": r.state,
                "test_acc": r.metric("test/acc") if r.state == FINISHED else math.nan,
                "run_id": r.run_id,
                "error": r.error,
            }
            for r in records
        ]
    )


def _fmt(value, digits: int = 4) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def display_rows(table: pd.DataFrame) -> list[dict[str, str]]:
    """The table as text cells for Markdown and HTML: accuracy as percent mean ± std."""
    rows = []
    for _, r in table.iterrows():
        acc = "" if math.isnan(r.test_acc_mean) else f"{100 * r.test_acc_mean:.2f} ± {100 * r.test_acc_std:.2f}"
        rows.append(
            {
                "variant": r.variant,
                "model": r.model,
                "adds": r.adds,
                "params": "" if pd.isna(r.params) else f"{int(r.params):,}",
                "test acc % (mean ± std)": acc,
                "best val acc %": "" if math.isnan(r.best_val_acc_mean) else f"{100 * r.best_val_acc_mean:.2f}",
                "train - val (points)": "" if math.isnan(r.gap_mean) else f"{100 * r.gap_mean:+.1f}",
                "epochs": "" if math.isnan(r.epochs) else f"{r.epochs:g}",
                "train s": _fmt(r.train_seconds_mean, 1),
                "images/s": "" if math.isnan(r.images_per_sec_mean) else f"{r.images_per_sec_mean:,.0f}",
                "status": f"{r.status} ({r.n_runs}/{r.n_seeds} ok)",
            }
        )
    return rows


def to_markdown(table: pd.DataFrame, title: str) -> str:
    rows = display_rows(table)
    header = list(rows[0]) if rows else ["variant"]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row[h].replace("|", "\\|") for h in header) + " |" for row in rows]
    problems = table[table.errors != ""]
    if len(problems):
        lines += ["", "Runs that did not finish:", ""]
        lines += [f"- {r.variant}: {r.errors}" for _, r in problems.iterrows()]
    lines += ["", "Test accuracy: mean ± sample standard deviation (ddof=1) over the finished seeds; 0 for one seed."]
    return "\n".join(lines) + "\n"
