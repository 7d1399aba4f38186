"""Which MLflow runs a workflow step opened, so that none is left RUNNING when its step dies.

Every run a step opens is tagged with the step's job id (JOB_TAG: a hash of the folder the step
writes), and the step keeps a marker in that folder (MARKER) from the run's creation to its end. A
step killed outright leaves the marker, which the workflow's sweep of abandoned runs reads; a run
created twice because a request was retried after a timeout the store did apply is found by its
job id and closed by the step itself (close_duplicates).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cnnlab.atomic import write_text

JOB_TAG = "cnnlab.job"
MARKER = ".mlflow-run.json"
DUPLICATE = "KILLED: a second run of the same job, made by a request retried after a timeout; see its twin"


def job_id(folder: str | Path) -> str:
    """The id of the step that writes `folder`: the same for every attempt of that step in this project folder."""
    return hashlib.sha1(str(Path(folder).resolve()).encode()).hexdigest()[:16]


def mark_open(folder: str | Path, run_id: str, uri: str) -> None:
    write_text(Path(folder) / MARKER, json.dumps({"mlflow_run_id": run_id, "tracking_uri": uri}) + "\n")


def mark_closed(folder: str | Path) -> None:
    (Path(folder) / MARKER).unlink(missing_ok=True)


def open_marks(folders) -> list[tuple[Path, str, str]]:
    """(folder, run id, store) of each marker left in `folders`: runs their steps did not close."""
    found = []
    for folder in folders:
        try:
            mark = json.loads((Path(folder) / MARKER).read_text())
        except (OSError, ValueError):
            continue
        found.append((Path(folder), mark.get("mlflow_run_id", ""), mark.get("tracking_uri", "")))
    return found


def close_duplicates(client, experiment_id: str, job: str, keep: set[str], wait_s: float = 30) -> list[str]:
    """Mark KILLED every RUNNING run of the experiment tagged with this job id but those in `keep` (the
    job's own run, and the one its folder names, which the job closes with its own reason); return
    their ids."""
    from cnnlab.tracking.store import end_run, with_retry

    runs = with_retry(client.search_runs, [experiment_id], wait_s=wait_s, doing="looking for twin runs",
                      filter_string=f"tags.`{JOB_TAG}` = '{job}' and attributes.status = 'RUNNING'")
    return [r.info.run_id for r in runs if r.info.run_id not in keep
            and end_run(client, r.info.run_id, "KILLED", DUPLICATE, wait_s=wait_s, only_if_running=True,
                        doing="closing a twin run")]
