"""MLflow runs whose job ended without closing them (SIGKILL, a lost node) are marked KILLED.

A training job closes its own run however it fails, but a process killed outright runs no code. The
workflow calls this before its jobs start and after one failed: every job of this project folder
has ended then (Snakemake's lock keeps a second workflow out), so a run that its folder names and
that is still RUNNING has no job left. A resumed job reopens it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from cnnlab.tracking.job_runs import close_duplicates, job_id, mark_closed, open_marks

log = logging.getLogger(__name__)

REASON = "its job ended without closing the run (killed, or its machine was lost); run the workflow again to resume it"


def abandoned_candidates(runs_folders: list[Path], uri: str) -> list[tuple[str, str]]:
    """(run id, job id) named by unfinished run folders (state.json without result.json) that used this store,
    and by the markers of steps that did not close their run (cnnlab.tracking.job_runs): a study's data
    preparation (results/<study>/) and report (results/<study>/report/)."""
    found = []
    for folder in runs_folders:
        for state_file in sorted(Path(folder).glob("*/seed*/state.json")):
            if (state_file.parent / "result.json").exists():
                continue
            try:
                state = json.loads(state_file.read_text())
            except (OSError, ValueError):
                continue
            if state.get("mlflow_run_id") and state.get("tracking_uri") == uri:
                found.append((state["mlflow_run_id"], job_id(state_file.parent)))
        study = Path(folder).parent
        for _, run_id, marked_uri in open_marks([study, study / "report"]):
            if run_id and marked_uri == uri:
                found.append((run_id, ""))
    return found


def close_abandoned_runs(uri: str, runs_folders: list[Path], wait_s: float = 30) -> list[str]:
    """Mark KILLED every RUNNING run that an unfinished run folder or a step's marker names, and every
    twin of an unfinished training run (the same job id); return their ids.

    Reads only the run folders when none is unfinished (no MLflow import, no store access).
    """
    candidates = abandoned_candidates(runs_folders, uri)
    if not candidates:
        return []
    from cnnlab.tracking.store import connect, end_run

    client = connect(uri, wait_s=wait_s)
    closed = [
        run_id
        for run_id, _ in candidates
        if end_run(client, run_id, "KILLED", f"KILLED: {REASON}", wait_s=wait_s, only_if_running=True,
                   doing="closing a run")
    ]
    for run_id, job in candidates:
        if job:
            try:
                experiment = client.get_run(run_id).info.experiment_id
            except Exception:  # the store lost it: nothing to find its twins by
                continue
            closed += close_duplicates(client, experiment, job, keep=set(), wait_s=wait_s)
    for folder in runs_folders:
        study = Path(folder).parent
        for marked in (study, study / "report"):
            mark_closed(marked)
    if closed:
        log.warning("marked %d MLflow run(s) KILLED: %s", len(closed), REASON)
    return closed
