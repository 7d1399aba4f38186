"""Credentials live only in MLflow's own variables: a URI that embeds them is split where the command
starts, so they reach the server and never a store, a file, a log line or a command line.

Each test puts a user and password where cnnlab really meets one (a `tracking.uri=` override, the
MLFLOW_TRACKING_URI variable, a config file), then reads back everything kept and printed.
"""

import base64
import http.server
import json
import os
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from cnnlab.errors import UserError
from cnnlab.study.studies import compose_config
from cnnlab.tracking.store import connect
from cnnlab.tracking.uri import move_credentials, resolve_uri, store_uri
from tests.helpers import read_json, run, train_cmd

PASSWORD = "s3cr3t-Pa55"
USER = "alice-user"
HIDDEN = (PASSWORD, USER)
VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


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
def clean_env(monkeypatch):
    """No credentials or store from the caller's environment; those a test sets are undone after it."""
    for name in VARIABLES:
        monkeypatch.setenv(name, "")  # recorded, so that what cnnlab sets is undone too
        monkeypatch.delenv(name)
    # connect() sets MLflow's HTTP waits with setdefault; keep them from outliving the test.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    yield os.environ


def test_a_uri_s_user_and_password_move_into_mlflow_s_variables(clean_env):
    # Percent-encoded as a URI must write them; MLflow's variables hold them decoded.
    assert move_credentials(f"https://{USER}:{PASSWORD}%40x@mlflow.example.org:5000/") == "https://mlflow.example.org:5000/"
    assert clean_env["MLFLOW_TRACKING_USERNAME"] == USER and clean_env["MLFLOW_TRACKING_PASSWORD"] == f"{PASSWORD}@x"
    for plain in ("sqlite:////tmp/a@b/mlflow.db", "http://127.0.0.1:5000", "postgresql://alice@db/mlflow"):
        assert move_credentials(plain) == plain  # a path's @, a database's user name alone: kept

    # MLFLOW_TRACKING_URI wins over a configured URI; its credentials go the same way.
    clean_env["MLFLOW_TRACKING_URI"] = f"http://{USER}:{PASSWORD}%40x@h:1"
    assert store_uri("http://bob:other@elsewhere:2") == "http://h:1" == clean_env["MLFLOW_TRACKING_URI"]
    assert clean_env["MLFLOW_TRACKING_PASSWORD"] == f"{PASSWORD}@x"


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        (f"http://bob:{PASSWORD}-2@h:1", "name different credentials"),  # the variables already hold others
        (f"postgresql://{USER}:{PASSWORD}@db:5432/mlflow", "PGPASSWORD"),  # MLflow needs a database's in the URI
    ],
)
def test_credentials_that_cannot_be_moved_are_one_sentence_that_does_not_repeat_them(clean_env, uri, says):
    clean_env["MLFLOW_TRACKING_USERNAME"], clean_env["MLFLOW_TRACKING_PASSWORD"] = USER, PASSWORD
    with pytest.raises(UserError) as err:
        move_credentials(uri, "tracking_uri")
    message = str(err.value)
    assert message.startswith("tracking_uri ") and says in message and "\n" not in message
    assert PASSWORD not in message


def test_a_uri_with_credentials_that_skipped_a_command_s_start_is_refused(clean_env):
    # train(cfg) called from other code, with the secret in the environment's URI: not used as it is.
    clean_env["MLFLOW_TRACKING_URI"] = f"http://{USER}:{PASSWORD}@h:1"
    with pytest.raises(UserError, match="carries credentials") as err:
        resolve_uri()
    _assert_hidden(str(err.value), "the error message")


def test_a_config_that_names_credentials_is_refused_before_anything_is_written(tmp_path):
    # A study's or config file's value is copied into every run's folder and MLflow run.
    with pytest.raises(UserError, match="MLFLOW_TRACKING_PASSWORD") as err:
        compose_config([f"tracking.uri=http://{USER}:{PASSWORD}@h:1", f"run.dir={tmp_path / 'run'}"])
    _assert_hidden(str(err.value), "the error message")


def test_an_unreachable_server_is_named_without_its_credentials(clean_env, caplog, capfd):
    port = _closed_port()
    with pytest.raises(UserError) as err:
        connect(store_uri(f"http://{USER}:{PASSWORD}@127.0.0.1:{port}"), timeout_s=5)
    message = str(err.value)
    # MLflow's own reason is kept, with the URL it called.
    assert message.startswith(f"The MLflow tracking store http://127.0.0.1:{port} cannot be reached (")
    assert f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search" in message
    _assert_hidden(message, "the error message")
    _assert_hidden(caplog.text, "the log")
    out, errout = capfd.readouterr()
    _assert_hidden(out + errout, "the output")


def test_training_against_an_unreachable_server_with_credentials_prints_and_records_no_secret(tmp_path, arrays):
    port = _closed_port()
    proc = run(train_cmd("model=mlp", "trainer.max_epochs=1", f"data.arrays={arrays}",
                         f"tracking.uri=http://{USER}:{PASSWORD}@127.0.0.1:{port}", f"run.dir={tmp_path / 'run'}"),
               cwd=tmp_path, timeout=180)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"The MLflow tracking store http://127.0.0.1:{port} cannot be reached" in proc.stderr
    _assert_hidden(proc.stdout + proc.stderr, "the job's output")
    # Hydra recorded the overrides and the config before the job met the store: the URI without them.
    overrides = (tmp_path / "run" / ".hydra" / "overrides.yaml").read_text()
    assert f"tracking.uri=http://127.0.0.1:{port}" in overrides
    _assert_hidden(_files_text(tmp_path / "run"), "the run folder")


class _BasicAuthGate(http.server.BaseHTTPRequestHandler):
    """A reverse proxy in front of a real `mlflow server` that lets through only requests carrying
    the expected basic-auth credentials, as an authenticating server would."""

    upstream = ""
    expected = ""
    seen: list[str] = []

    def _forward(self) -> None:
        auth = self.headers.get("Authorization", "")
        self.seen.append(auth)
        if auth != self.expected:
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "authorization")}
        request = urllib.request.Request(self.upstream + self.path, data=body, headers=headers, method=self.command)
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                status, data, kind = resp.status, resp.read(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            status, data, kind = e.code, e.read(), e.headers.get("Content-Type", "")
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _forward

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def gated_server(tmp_path, mlflow_server_factory):
    """(the gate's address, the server's address) of a real server that needs USER and PASSWORD."""
    upstream = mlflow_server_factory(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server-artifacts")
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    gate = type("Gate", (_BasicAuthGate,), {"upstream": upstream, "expected": f"Basic {token}", "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), gate)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", upstream, gate
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
@pytest.mark.parametrize("given_in", ["override", "environment"])
def test_a_run_logged_through_a_uri_with_credentials_authenticates_and_keeps_them_out_of_everything(
    tmp_path, arrays, gated_server, given_in
):
    gate, upstream, auth = gated_server
    uri = f"http://{USER}:{PASSWORD}@{gate}"
    where = {"override": ([f"tracking.uri={uri}"], {}), "environment": ([], {"MLFLOW_TRACKING_URI": uri})}
    extra, env = where[given_in]
    proc = run(train_cmd("study=smoke", "variant=mlp_baseline", "seed=0", "trainer.max_epochs=1",
                         f"data.arrays={arrays}", *extra, f"run.dir={tmp_path / 'run'}"),
               cwd=tmp_path, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Every request carried the credentials (the gate refuses any other), as MLflow's basic auth.
    assert auth.seen and set(auth.seen) == {auth.expected}
    _assert_hidden(proc.stdout + proc.stderr, "the job's output")

    client = MlflowClient(upstream)
    r = client.get_run(read_json(tmp_path / "run" / "result.json")["mlflow_run_id"])
    assert r.info.status == "FINISHED"
    if given_in == "override":
        assert r.data.params["tracking.uri"] == f"http://{gate}"
    _assert_hidden(json.dumps([r.data.params, r.data.tags]), "the run's params and tags")
    _assert_hidden((tmp_path / "server.db").read_bytes().decode("latin-1"), "the server's database")
    _assert_hidden(_files_text(tmp_path / "server-artifacts"), "the run's artifacts (config.yaml, checkpoint)")
    _assert_hidden(_files_text(tmp_path / "run"), "the run folder (.hydra/ included)")


@pytest.mark.slow
def test_without_the_credentials_the_gate_refuses_the_run(tmp_path, arrays, gated_server):
    gate, _, auth = gated_server
    proc = run(train_cmd("model=mlp", "trainer.max_epochs=1", f"data.arrays={arrays}", f"tracking.uri=http://{gate}",
                         f"run.dir={tmp_path / 'run'}"), cwd=tmp_path, timeout=180)  # fmt: skip
    assert proc.returncode != 0
    assert auth.seen and auth.expected not in auth.seen


DATA_TOKEN = "sig-T0k3n-value"  # a pre-signed URL's signature


class _GatedArchive(http.server.SimpleHTTPRequestHandler):
    """Serves the tiny archive only to a request with the data's user and password and its token."""

    expected = ""

    def do_GET(self) -> None:
        if self.headers.get("Authorization", "") != self.expected or f"token={DATA_TOKEN}" not in self.path:
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.path = self.path.split("?", 1)[0]
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


@pytest.mark.slow
def test_a_workflow_given_secrets_in_both_urls_keeps_them_out_of_every_record_and_command_line(
    tmp_path, gated_server
):
    import functools
    import subprocess
    import time

    from tests.helpers import SNAKEMAKE, copy_workflow
    from tests.tiny_cifar import write_tiny_archive

    gate, upstream, auth = gated_server
    served = tmp_path / "served"
    served.mkdir()
    md5 = write_tiny_archive(served / "tiny.tar.gz", 100)
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    handler = type("Handler", (_GatedArchive,), {"expected": f"Basic {token}"})
    data_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(served)))
    threading.Thread(target=data_server.serve_forever, daemon=True).start()
    wd = copy_workflow(tmp_path / "wd")
    data_url = f"http://{USER}:{PASSWORD}@127.0.0.1:{data_server.server_address[1]}/tiny.tar.gz?token={DATA_TOKEN}"
    cmd = [SNAKEMAKE, "--cores", "2", "-s", str(wd / "Snakefile"), "--directory", str(wd), "--config", "study=smoke",
           f"tracking_uri=http://{USER}:{PASSWORD}@{gate}", f"data_url={data_url}", f"data_md5={md5}",
           "train_records=500", "test_records=100", "val_size=100"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    seen_commands = []
    try:
        with subprocess.Popen(cmd, cwd=wd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as p:
            while p.poll() is None:  # every job's command line, while the jobs run (not the typed command's)
                listing = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
                for line in listing.splitlines():
                    pid, _, args = line.strip().partition(" ")
                    if int(pid) != p.pid and ("cnnlab" in args or "snakemake" in args):
                        seen_commands.append(args)
                time.sleep(0.5)
            output = p.stdout.read()
    finally:
        data_server.shutdown()
        data_server.server_close()
    assert p.returncode == 0, output[-4000:]
    secrets = (PASSWORD, DATA_TOKEN)
    assert len(seen_commands) > 10 and not [c for c in seen_commands if any(s in c for s in secrets)]
    for secret in secrets:
        assert secret not in output, "snakemake's output"
        for path in sorted(wd.rglob("*")):  # .snakemake/ (metadata, scripts, logs), logs/, results/ ...
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path.relative_to(wd)
    # The server was reached with the credentials; the archive with its user, password and token.
    assert auth.seen and set(auth.seen) == {auth.expected}
    stats = json.loads((wd / "results" / "data" / "cifar10.json").read_text())
    assert stats["source_url"] == f"http://127.0.0.1:{data_server.server_address[1]}/tiny.tar.gz"


MOUNTS = """sysfs /sys sysfs rw 0 0
/dev/sda1 / ext4 rw,relatime 0 0
head:/export/home /home nfs4 rw,vers=4.2 0 0
/dev/sdb1 /home/alice/local\\040disk xfs rw 0 0
lustre@o2ib:/scratch /scratch lustre rw 0 0
tmpfs /tmp tmpfs rw 0 0
"""


@pytest.mark.parametrize(("path", "network"), [
    ("/home/alice/cnnlab/results/mlflow.db", "nfs4"),
    ("/scratch/alice/results/mlflow.db", "lustre"),
    ("/home/alice/local disk/results/mlflow.db", ""),  # a local disk mounted inside the NFS home
    ("/tmp/results/mlflow.db", ""),
    ("/opt/cnnlab/results/mlflow.db", ""),
])
def test_a_store_on_a_network_filesystem_is_recognised_by_its_longest_mount(path, network):
    from cnnlab.tracking.uri import on_network_filesystem

    assert on_network_filesystem(path, MOUNTS) == network
