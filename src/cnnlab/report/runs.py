"""A study's training runs as read from MLflow: one record per (variant, seed) of the study file.

Reading is linear in the number of runs: the runs come from `search_runs` in pages, and each
finished run's per-epoch histories are fetched once per metric (never a search per run).
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cnnlab.errors import UserError
from cnnlab.study.studies import Study

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
HISTORY_KEYS = ("val/acc", "val/loss")  # what the learning curves draw; each key costs a query per run
FINISHED, FAILED, MISSING = "ok", "failed", "missing"


@dataclass
class RunRecord:
    variant: str
    seed: int
    state: str  # ok, failed or missing
    run_id: str = ""
    error: str = ""
    tags: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)  # latest value of each metric
    params: dict = field(default_factory=dict)
    history: dict = field(default_factory=dict)  # metric -> list of (epoch, value), sorted by epoch

    def metric(self, key: str) -> float:
        return float(self.metrics.get(key, math.nan))


def experiment_id(client: MlflowClient, study_name: str) -> str:
    exp = client.get_experiment_by_name(study_name)
    if exp is None:
        raise UserError(
            f"The tracking store has no MLflow experiment named '{study_name}'; train the study first "
            "(snakemake --config study=...) or point --uri at the store it was trained into."
        )
    return exp.experiment_id


def search_train_runs(client: MlflowClient, exp_id: str) -> list:
    """Every training run of the experiment, page by page."""
    runs, token = [], None
    while True:
        page = client.search_runs(
            [exp_id], filter_string="tags.`cnnlab.kind` = 'train'", max_results=PAGE_SIZE, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _state(run) -> tuple[str, str]:
    status = run.info.status
    if status == "FINISHED":
        return FINISHED, ""
    error = run.data.tags.get("error", "")
    if status == "RUNNING":
        # The report is built after every job ended (or from the workflow's error hook), so a run
        # still RUNNING belongs to a job that died without marking it.
        return FAILED, error or "the run never finished (its job was killed or is still running)"
    return FAILED, error or f"run ended with status {status}"


def _preference(run) -> tuple:
    # Several runs for one (variant, seed): a finished one beats a failed one; then the newest.
    return (run.info.status == "FINISHED", run.info.start_time or 0)


def collect_runs(client: MlflowClient, study: Study, with_history: bool = True) -> list[RunRecord]:
    """One RunRecord per (variant, seed) of the study, in the study's order."""
    exp_id = experiment_id(client, study.name)
    chosen: dict[tuple[str, int], object] = {}
    for run in search_train_runs(client, exp_id):
        tags = run.data.tags
        try:
            key = (tags.get("variant", ""), int(tags.get("seed", "-1")))
        except ValueError:
            continue
        if key[0] not in study.variants or key[1] not in study.seeds_of(key[0]):
            continue  # a run of a variant or seed the study file no longer lists
        if key not in chosen or _preference(run) > _preference(chosen[key]):
            chosen[key] = run
    records = []
    for variant, seed in study.jobs():
        run = chosen.get((variant, seed))
        if run is None:
            records.append(RunRecord(variant, seed, MISSING, error="no run in the tracking store"))
            continue
        state, error = _state(run)
        records.append(
            RunRecord(
                variant,
                seed,
                state,
                run.info.run_id,
                error,
                dict(run.data.tags),
                dict(run.data.metrics),
                dict(run.data.params),
            )
        )
    if with_history:
        fetch_histories(client, [r for r in records if r.run_id])
    log.info("%d runs in the store for %d (variant, seed) pairs", len(chosen), len(records))
    return records


def fetch_histories(client: MlflowClient, records: list[RunRecord], threads: int = 4,
                    keys: tuple[str, ...] = HISTORY_KEYS) -> None:
    """Fill each record's per-epoch history of keys (those not fetched yet); a few threads overlap the
    store's round trips."""

    def one(record: RunRecord) -> None:
        for key in keys:
            if key not in record.metrics or key in record.history:
                continue
            points = {m.step: m.value for m in client.get_metric_history(record.run_id, key)}
            record.history[key] = sorted(points.items())

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, records))
