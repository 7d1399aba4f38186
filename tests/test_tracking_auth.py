"""The tracking server docs/cluster.md starts for a shared cluster: MLflow's basic-auth app, allowed
hosts, artifacts through the server. A training job with credentials in MLflow's variables logs to
it; a client without them is refused."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.browser import _free_port, _stop
from tests.helpers import read_json, run, tiny_prepared, train_cmd

pytestmark = pytest.mark.slow

ADMIN_PASSWORD = "an-Adm1n-pass"


@pytest.fixture
def auth_server(tmp_path):
    """The URL of `mlflow server --app-name basic-auth`, as docs/cluster.md starts it."""
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app needs mlflow[auth] (pip install -e '.[cluster]')")
    auth_ini = tmp_path / "basic_auth.ini"
    auth_ini.write_text(
        f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{tmp_path / 'users.db'}\n"
        "admin_username = admin\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    port = _free_port()
    cmd = [str(Path(sys.executable).with_name("mlflow")), "server", "--app-name", "basic-auth",
           "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
           "--artifacts-destination", str(tmp_path / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--allowed-hosts", f"127.0.0.1:{port},localhost:{port}",
           "--workers", "1"]
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini), "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": "a-test-secret", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except urllib.error.HTTPError:  # up, and asking for a login
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
    try:
        yield url, tmp_path
    finally:
        _stop(proc)


def test_a_job_with_credentials_logs_to_the_authenticated_server_and_a_client_without_is_refused(auth_server):
    url, tmp_path = auth_server
    arrays = tiny_prepared(tmp_path / "data")
    env = {"MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}
    proc = run(train_cmd("study=smoke", "variant=mlp_baseline", "seed=0", "trainer.max_epochs=1",
                         f"data.arrays={arrays}", f"run.dir={tmp_path / 'run'}"), cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id = read_json(tmp_path / "run" / "result.json")["mlflow_run_id"]
    from mlflow import MlflowClient

    os.environ.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=ADMIN_PASSWORD)
    try:
        assert MlflowClient(url).get_run(run_id).info.status == "FINISHED"
    finally:
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(name)
    # The artifacts went through the server, into its destination.
    assert any((tmp_path / "artifacts").rglob("config.yaml"))
    # Without credentials: 401, for reading as for writing.
    for path in (f"/api/2.0/mlflow/runs/get?run_id={run_id}", "/api/2.0/mlflow/experiments/search?max_results=1"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + path, timeout=10)
        assert refused.value.code == 401
