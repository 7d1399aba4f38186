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


def test_a_ddp_run_is_not_pinned_to_one_gpu_and_its_ranks_take_no_slot(tmp_path):
    """trainer.devices=2 with two (stand-in) GPUs: neither rank pins itself to one GPU. Pinned, the
    run would see one GPU, and the relaunched rank would wait for the slot rank zero holds."""
    arrays = tiny_prepared(tmp_path / "data", n_per_batch=100, val_size=100)
    args = train_cmd("trainer=ddp", "trainer.accelerator=auto", "trainer.devices=2", "trainer.max_epochs=1",
                     "trainer.batch_size=32", "model=mlp", "tracking=none", f"data.arrays={arrays}",
                     f"run.dir={tmp_path / 'run'}", "run.study=ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "0,1",
           "CNNLAB_GPU_LOCK_DIR": str(tmp_path / "locks")}
    for name in ("CNNLAB_JOBS_PER_GPU", "SLURM_JOB_GPUS", "LOCAL_RANK"):
        env.pop(name, None)
    log_path = tmp_path / "train.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
                                env=env)
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = log_path.read_text()
    assert proc.returncode == 0, out[-3000:]
    assert "pinned to GPU" not in out
    assert "GLOBAL_RANK: 1" in out  # really two processes
    assert read_json(tmp_path / "run" / "result.json")["epochs"] == 1
