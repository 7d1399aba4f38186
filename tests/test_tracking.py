"""What a training run records in MLflow, against the embedded SQLite store and a real server."""

import json
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow
import pytest
from mlflow import MlflowClient

from cnnlab.data.preprocess import load_arrays
from tests.helpers import read_json, run, train_cmd

EPOCH_METRICS = {"train/loss", "train/acc", "val/loss", "val/acc", "lr", "train/l1_penalty", "train/l2_penalty",
                 "epoch_seconds", "epoch_wall_seconds", "train/images_per_sec"}
FINAL_METRICS = {"test/acc", "test/loss", "params", "best_val_acc", "epochs", "job_seconds"}
TAGS = {"study", "variant", "seed", "model", "git_commit", "git_dirty", "data_md5", "zscore_mean", "zscore_std",
        "torch_version", "lightning_version", "cnnlab_version", "device"}


def test_a_tiny_run_records_params_tags_metrics_and_artifacts(tmp_path, arrays):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run(train_cmd("study=smoke", "variant=cnn_baseline", "seed=0", f"data.arrays={arrays}",
                         f"tracking.uri={uri}", f"run.dir={tmp_path / 'run'}", "regularization=l1_l2",
                         "trainer.max_epochs=3"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = read_json(tmp_path / "run" / "result.json")
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("smoke")
    (r,) = client.search_runs([exp.experiment_id], "tags.`cnnlab.kind` = 'train'")
    assert r.info.run_id == result["mlflow_run_id"] and r.info.status == "FINISHED"
    assert r.info.run_name == "cnn_baseline-seed0"
    assert TAGS <= set(r.data.tags), TAGS - set(r.data.tags)
    assert (
        r.data.tags["variant"] == "cnn_baseline" and r.data.tags["model"] == "cnn" and r.data.tags["adds"] == "baseline"
    )
    stats = read_json(arrays.with_suffix(".json"))
    assert r.data.tags["data_md5"] == stats["archive_md5"]
    assert json.loads(r.data.tags["zscore_mean"]) == pytest.approx(stats["mean"], abs=1e-6)
    # The resolved config, flattened
    assert r.data.params["model._target_"] == "cnnlab.models.cnn.CNN" and r.data.params["model.channels"] == "[8, 16]"
    assert r.data.params["regularization.l1"] == "1e-05" and r.data.params["trainer.max_epochs"] == "3"
    assert EPOCH_METRICS | FINAL_METRICS <= set(r.data.metrics)
    for name in EPOCH_METRICS:
        assert [m.step for m in client.get_metric_history(r.info.run_id, name)] == [0, 1, 2], name
    assert r.data.metrics["test/acc"] == pytest.approx(result["test_acc"])
    assert r.data.metrics["train/l1_penalty"] > 0 and r.data.metrics["train/l2_penalty"] > 0
    # A whole epoch holds its training stretch and more (validation, probe, checkpoints, logging).
    walls, trains = (client.get_metric_history(r.info.run_id, n) for n in ("epoch_wall_seconds", "epoch_seconds"))
    for wall, trained in zip(sorted(walls, key=lambda m: m.step), sorted(trains, key=lambda m: m.step), strict=True):
        assert wall.value > trained.value > 0, (wall.step, wall.value, trained.value)
    assert sum(m.value for m in walls) < result["job_seconds"]
    arts = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {
        "config.yaml",
        "confusion_matrix.csv",
        "confusion_matrix.png",
        "first_layer_filters.png",
        "checkpoints",
    } <= arts
    assert [a.path for a in client.list_artifacts(r.info.run_id, "checkpoints")] == ["checkpoints/best.ckpt"]
    cm = client.download_artifacts(r.info.run_id, "confusion_matrix.csv", str(tmp_path))
    counts = [list(map(int, line.split(",")[1:])) for line in open(cm).read().splitlines()[1:]]
    assert sum(map(sum, counts)) == stats["n_test"]


def test_secrets_in_the_environment_are_never_logged(tmp_path, arrays):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_PASSWORD": "hunter2-secret", "API_TOKEN": "tok-abc123", "AWS_SECRET_ACCESS_KEY": "aws-xyz"}
    proc = run(train_cmd("model=mlp", "model.hidden=[8]", "trainer.max_epochs=1", f"data.arrays={arrays}",
                         f"tracking.uri={uri}", f"run.dir={tmp_path / 'run'}"), cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r,) = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("adhoc").experiment_id])
    logged = json.dumps([r.data.params, r.data.tags])
    for secret in env.values():
        assert secret not in logged


def test_a_nan_loss_fails_the_run_with_the_reason(tmp_path, arrays):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run(train_cmd("model=mlp", "optimizer.lr=1e12", "trainer.nan_check_every=1", "trainer.max_epochs=2",
                         f"data.arrays={arrays}", f"tracking.uri={uri}", f"run.dir={tmp_path / 'run'}"), cwd=tmp_path)
    assert proc.returncode == 3
    assert "The training loss became nan" in proc.stderr and "lower the learning rate" in proc.stderr
    assert "Traceback" not in proc.stderr
    client = MlflowClient(uri)
    (r,) = client.search_runs([client.get_experiment_by_name("adhoc").experiment_id])
    assert r.info.status == "FAILED"
    assert "NonFiniteLossError: The training loss became nan" in r.data.tags["error"]
    assert not (tmp_path / "run" / "result.json").exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_tracking_server_fails_fast_with_a_clear_message(tmp_path, arrays):
    start = time.monotonic()
    proc = run(train_cmd("model=mlp", "trainer.max_epochs=1", f"data.arrays={arrays}",
                         f"tracking.uri=http://127.0.0.1:{_closed_port()}", f"run.dir={tmp_path / 'run'}"),
               cwd=tmp_path, timeout=180)
    assert proc.returncode == 2
    assert "cannot be reached" in proc.stderr and "start the server" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - start < 90


def test_mlflow_tracking_uri_from_the_environment_wins(tmp_path, arrays):
    uri = f"sqlite:///{tmp_path / 'env.db'}"
    proc = run(train_cmd("model=mlp", "model.hidden=[8]", "trainer.max_epochs=1", f"data.arrays={arrays}",
                         f"tracking.uri=sqlite:///{tmp_path / 'config.db'}", f"run.dir={tmp_path / 'run'}"),
               cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert MlflowClient(uri).get_experiment_by_name("adhoc") is not None
    assert not (tmp_path / "config.db").exists()


@pytest.mark.slow
def test_a_run_arrives_at_a_real_mlflow_server_and_reads_back_over_rest(tmp_path, arrays, mlflow_server_factory):
    url = mlflow_server_factory(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts")
    proc = run(train_cmd("study=smoke", "variant=mlp_baseline", "seed=0", f"data.arrays={arrays}",
                         f"tracking.uri={url}", f"run.dir={tmp_path / 'run'}"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id = read_json(tmp_path / "run" / "result.json")["mlflow_run_id"]
    with urllib.request.urlopen(f"{url}/api/2.0/mlflow/runs/get?run_id={run_id}", timeout=30) as resp:
        data = json.load(resp)["run"]
    assert data["info"]["status"] == "FINISHED"
    tags = {t["key"]: t["value"] for t in data["data"]["tags"]}
    assert tags["variant"] == "mlp_baseline" and tags["study"] == "smoke"
    metrics = {m["key"] for m in data["data"]["metrics"]}
    assert {"val/acc", "test/acc", "train/loss"} <= metrics
    query = f"{url}/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=checkpoints"
    with urllib.request.urlopen(query, timeout=30) as resp:
        assert [f["path"] for f in json.load(resp)["files"]] == ["checkpoints/best.ckpt"]
    # The logged model went through the server too, and loads back from it.
    client = MlflowClient(url)
    (output,) = client.get_run(run_id).outputs.model_outputs
    assert str(client.get_logged_model(output.model_id).status) == "READY"
    mlflow.set_tracking_uri(url)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{output.model_id}")
    finally:
        mlflow.set_tracking_uri(None)
    assert len(model.predict(load_arrays(arrays)["x_test"][:4])) == 4


def test_studies_creating_one_new_store_at_once_all_succeed(tmp_path):
    # The workflow creates a study's and its learning-rate sweep's experiments in parallel jobs, in
    # one SQLite file that does not exist yet: MLflow's schema migrations must not run twice at once.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = (
        "import sys, time; from cnnlab.tracking.store import init_store; "
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time())); "
        "print(init_store(sys.argv[1], sys.argv[3])['experiment_id'])"
    )
    start = f"{time.time() + 4:.3f}"  # all processes past their imports, then released together
    procs = [
        subprocess.Popen([sys.executable, "-c", code, uri, start, f"study{i}"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]  # fmt: skip
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 2, [err[-2000:] for _, err in results]
    ids = {out.strip() for out, _ in results}
    client = MlflowClient(uri)
    assert {client.get_experiment(i).name for i in ids} == {f"study{i}" for i in range(2)}


def test_a_twin_run_left_by_a_retried_create_is_closed_by_its_own_job(tmp_path, arrays):
    # A create_run retried after a timeout the store did apply leaves a second RUNNING run that no
    # run folder names. Each run carries its job's id (cnnlab.job); the job closes its twins itself.
    from cnnlab.tracking.job_runs import DUPLICATE, JOB_TAG, job_id

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "run"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("smoke")
    twin = client.create_run(exp_id, run_name="cnn_baseline-seed0", tags={JOB_TAG: job_id(run_dir)})
    other_job = client.create_run(exp_id, run_name="mlp_baseline-seed0", tags={JOB_TAG: job_id(tmp_path / "other")})
    proc = run(train_cmd("study=smoke", "variant=cnn_baseline", "seed=0", f"data.arrays={arrays}",
                         f"tracking.uri={uri}", f"run.dir={run_dir}", "trainer.max_epochs=1"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = read_json(run_dir / "result.json")
    ran = client.get_run(result["mlflow_run_id"])
    assert ran.info.status == "FINISHED" and ran.data.tags[JOB_TAG] == job_id(run_dir)
    closed = client.get_run(twin.info.run_id)
    assert closed.info.status == "KILLED" and closed.data.tags["error"] == DUPLICATE
    assert client.get_run(other_job.info.run_id).info.status == "RUNNING"  # another job's run is not touched
