"""One run across two CPU processes (DDP, gloo): logged once, checkpointed once, resumable."""

import os
import signal
import subprocess
import time

import pytest
from mlflow import MlflowClient

from tests.helpers import read_json, run, tiny_prepared, train_cmd

pytestmark = pytest.mark.slow


def test_ddp_on_two_cpu_processes_logs_once_and_resumes_after_sigkill(tmp_path):
    arrays = tiny_prepared(tmp_path / "data", n_per_batch=300, val_size=150)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = train_cmd("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=3",
                     "trainer.batch_size=16", "model=cnn", "model.channels=[8,16]", "optimizer=adam",
                     f"data.arrays={arrays}", f"tracking.uri={uri}", f"run.dir={tmp_path / 'run'}", "run.study=ddp")
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        first = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 600
    while "epoch 0:" not in log_path.read_text():
        assert first.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
        time.sleep(0.2)
    time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)  # both processes, mid-epoch 1
    first.wait()
    assert not (tmp_path / "run" / "result.json").exists()
    run_id = read_json(tmp_path / "run" / "state.json")["mlflow_run_id"]

    second = run(args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stderr
    result = read_json(tmp_path / "run" / "result.json")
    assert result["mlflow_run_id"] == run_id and result["epochs"] == 3
    assert "GLOBAL_RANK: 1" in second.stderr  # really two processes

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert len(runs) == 1  # rank one never opened a run
    assert [m.step for m in client.get_metric_history(run_id, "val/acc")] == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
