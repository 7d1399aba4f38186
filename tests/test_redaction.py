"""Credentials never reach the MLflow store or what a user sees: in a URI, a parameter, an error message.

Each test puts a password or token where cnnlab really meets one, then reads back everything the
store kept (parameters, tags, the database file, the artifacts) and everything printed.
"""

import json
import socket
from pathlib import Path

import pytest
from mlflow import MlflowClient

from cnnlab.errors import UserError
from cnnlab.tracking.redaction import redact_text
from cnnlab.tracking.store import connect, ensure_experiment, set_tags, start_or_resume_run
from tests.helpers import read_json, run, tiny_prepared, train_cmd

PASSWORD = "s3cr3t-Pa55"
TOKEN = "tok-9f8e7d6c5b"
USER = "alice-user"
HIDDEN = (PASSWORD, TOKEN, USER)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_hidden(text: str, where: str) -> None:
    for secret in HIDDEN:
        assert secret not in text, f"{secret!r} appears in {where}"


def _files_text(folder: Path) -> str:
    return "".join(p.read_bytes().decode("latin-1") for p in sorted(folder.rglob("*")) if p.is_file())


@pytest.fixture
def bounded_http(monkeypatch):
    """connect() sets MLflow's HTTP waits with setdefault; keep them from outliving the test."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")


def test_redact_text_removes_the_credentials_of_every_url_and_known_secret_values(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)
    text = (
        f"API request to http://{USER}:{PASSWORD}@127.0.0.1:5000/api/2.0 failed; "
        f"the store postgresql://{USER}:{PASSWORD}@db:5432/mlflow?sslmode=require&password={PASSWORD} "
        f"answered 'Bearer {TOKEN}' for ['https://{USER}@data.example.org/c.tar.gz']"
    )
    assert redact_text(text) == (
        "API request to http://127.0.0.1:5000/api/2.0 failed; "
        "the store postgresql://db:5432/mlflow?sslmode=require&password=*** "
        "answered 'Bearer ***' for ['https://data.example.org/c.tar.gz']"
    )
    for plain in ("sqlite:////tmp/a@b/mlflow.db", "file:///x/y.npz", "mail me@example.org", "http://127.0.0.1:5000"):
        assert redact_text(plain) == plain


def test_secret_params_and_tags_reach_a_real_store_without_their_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    db = tmp_path / "mlflow.db"
    client = connect(f"sqlite:///{db}")
    experiment = ensure_experiment(client, "secrets", tmp_path / "artifacts")
    params = {
        "tracking.uri": f"http://{USER}:{PASSWORD}@mlflow.example.org:5000",
        "data.urls": f"['https://{USER}:{PASSWORD}@data.example.org/cifar.tar.gz']",
        "storage.api_token": TOKEN,
        "db.password": "hunter22-pw",
        "model.family": "cnn",
    }
    tags = {"note": f"copied from s3://{USER}:{PASSWORD}@bucket/x", "auth_header": f"Bearer {TOKEN}", "study": "s"}
    run_id, _ = start_or_resume_run(client, experiment, None, "leaky", params, tags)
    # A failed run's error tag carries the exception's text, which may quote the URL it called.
    set_tags(client, run_id, {"error": f"MlflowException: API request to http://{USER}:{PASSWORD}@h:1/api failed"})

    r = client.get_run(run_id)
    _assert_hidden(json.dumps([r.data.params, r.data.tags]), "the run's params and tags")
    assert "hunter22-pw" not in json.dumps(r.data.params)
    assert PASSWORD.encode() not in db.read_bytes() and TOKEN.encode() not in db.read_bytes()
    # What is not secret is kept.
    assert r.data.params["tracking.uri"] == "http://mlflow.example.org:5000"
    assert r.data.params["data.urls"] == "['https://data.example.org/cifar.tar.gz']"
    assert r.data.params["model.family"] == "cnn"
    assert not {"storage.api_token", "db.password"} & set(r.data.params)
    assert r.data.tags["note"] == "copied from s3://bucket/x" and "auth_header" not in r.data.tags
    assert r.data.tags["error"] == "MlflowException: API request to http://h:1/api failed"


def test_an_unreachable_server_is_named_without_its_credentials(bounded_http, caplog, capfd):
    port = _closed_port()
    with pytest.raises(UserError) as err:
        connect(f"http://{USER}:{PASSWORD}@127.0.0.1:{port}", timeout_s=5)
    message = str(err.value)
    # MLflow's own reason is kept, its copy of the URL without the credentials.
    assert message.startswith(f"The MLflow tracking store http://127.0.0.1:{port} cannot be reached (")
    assert f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search" in message
    _assert_hidden(message, "the error message")
    _assert_hidden(caplog.text, "the log")
    out, errout = capfd.readouterr()
    _assert_hidden(out + errout, "the output")


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    return tiny_prepared(tmp_path_factory.mktemp("data"))


def test_training_against_an_unreachable_server_with_credentials_prints_no_secret(tmp_path, arrays):
    port = _closed_port()
    proc = run(train_cmd("model=mlp", "trainer.max_epochs=1", f"data.arrays={arrays}",
                         f"tracking.uri=http://{USER}:{PASSWORD}@127.0.0.1:{port}", f"run.dir={tmp_path / 'run'}"),
               cwd=tmp_path, timeout=180)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"The MLflow tracking store http://127.0.0.1:{port} cannot be reached" in proc.stderr
    _assert_hidden(proc.stdout + proc.stderr, "the job's output")


@pytest.mark.slow
def test_a_run_logged_through_a_uri_with_credentials_keeps_them_out_of_the_server(
    tmp_path, arrays, mlflow_server_factory
):
    url = mlflow_server_factory(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server-artifacts")
    host = url.removeprefix("http://")
    proc = run(train_cmd("study=smoke", "variant=mlp_baseline", "seed=0", f"data.arrays={arrays}",
                         f"tracking.uri=http://{USER}:{PASSWORD}@{host}", f"run.dir={tmp_path / 'run'}"),
               cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_hidden(proc.stdout + proc.stderr, "the job's output")

    client = MlflowClient(url)
    r = client.get_run(read_json(tmp_path / "run" / "result.json")["mlflow_run_id"])
    assert r.info.status == "FINISHED"
    assert r.data.params["tracking.uri"] == url
    _assert_hidden(json.dumps([r.data.params, r.data.tags]), "the run's params and tags")
    _assert_hidden((tmp_path / "server.db").read_bytes().decode("latin-1"), "the server's database")
    _assert_hidden(_files_text(tmp_path / "server-artifacts"), "the run's artifacts (config.yaml, checkpoint)")
    _assert_hidden(_files_text(tmp_path / "run"), "the run folder")
