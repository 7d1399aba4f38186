"""A study's store and experiment, made once before any training job, with the data preparation
recorded as a run of it (the workflow's init_tracking rule)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Param

from cnnlab.atomic import write_text
from cnnlab.data.preprocess import load_stats
from cnnlab.tracking.job_runs import JOB_TAG, close_duplicates, job_id, mark_closed, mark_open
from cnnlab.tracking.store import end_run, init_store, with_retry

log = logging.getLogger(__name__)


def init_study_tracking(
    uri: str, study: str, artifact_root: str | Path, stats_file: str | Path, info_out: str | Path
) -> dict:
    """Create store and experiment, record the data preparation as a run, write the info file."""
    stats = load_stats(Path(stats_file).with_suffix(".npz"))
    info = init_store(uri, study, artifact_root)
    client = MlflowClient(tracking_uri=uri)
    md5 = stats.get("archive_md5", "")

    def retry(fn, *args, **kwargs):
        return with_retry(fn, *args, doing="recording the data preparation", uri=uri, **kwargs)

    found = retry(client.search_runs, [info["experiment_id"]], max_results=1, filter_string=(
        f"tags.`cnnlab.kind` = 'prepare' and tags.data_md5 = '{md5}' and attributes.status = 'FINISHED'"))
    if not found:
        folder, job = Path(info_out).parent, job_id(Path(info_out).parent / "prepare")
        run = retry(client.create_run, info["experiment_id"], run_name="prepare_data",
                    tags={"cnnlab.kind": "prepare", "study": study, "data_md5": md5, JOB_TAG: job})
        mark_open(folder, run.info.run_id, uri)  # a set-up killed from here on is found by the sweep
        close_duplicates(client, info["experiment_id"], job, keep={run.info.run_id})
        try:
            params = {k: stats[k] for k in ("n_train", "n_val", "n_test", "val_size", "split_seed", "archive_md5")}
            params.update({f"zscore_mean_{c}": round(m, 6) for c, m in zip("rgb", stats["mean"], strict=True)})
            params.update({f"zscore_std_{c}": round(s, 6) for c, s in zip("rgb", stats["std"], strict=True)})
            retry(client.log_batch, run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
            retry(client.log_artifact, run.info.run_id, str(stats_file))
            end_run(client, run.info.run_id, "FINISHED", doing="recording the data preparation")
            mark_closed(folder)
        except BaseException as e:
            try:
                end_run(client, run.info.run_id, "FAILED", wait_s=30)
                mark_closed(folder)
            except Exception:
                log.warning("could not mark the prepare_data run %s as FAILED", run.info.run_id)
            raise e
    write_text(info_out, json.dumps(info, indent=2) + "\n")
    return info
