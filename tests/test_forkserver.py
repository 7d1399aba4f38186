"""Training jobs forked by the warm process (cnnlab.launch.forkserver): the same job as a cold start, in
every way a caller sees (results, exit status, log, signals, the name ps shows)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers import PYTHON, read_json, run, tiny_prepared

JOB = ("trainer.progress_bar=false", "model=mlp", "model.hidden=[32]", "trainer.batch_size=50")
FORKED = re.compile(r"cnnlab: job process (\d+), forked from the warm process (\d+)")


@contextlib.contextmanager
def _new_project(prefix: str, idle_s: str):
    """A folder with tiny data, and a private runtime folder for the warm process's socket (short:
    a Unix socket's path has at most 107 bytes); the environment that points jobs at it. Removed
    at the end."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        tiny_prepared(root)
        runtime = root / "rt"
        runtime.mkdir(mode=0o700)
        yield root, {"XDG_RUNTIME_DIR": str(runtime), "CNNLAB_WARM_IDLE_S": idle_s}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _sockets_folder(env: dict) -> Path:
    return Path(env["XDG_RUNTIME_DIR"], f"cnnlab-{os.getuid()}")


@pytest.fixture(scope="module")
def project():
    """A project shared by the tests below, tracked in SQLite; its warm process is stopped at the end."""
    with _new_project("cnnlab-fs-", "30") as (root, env):
        yield root, {**env, "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}
        for log in root.glob("*.log"):
            for _, server in FORKED.findall(log.read_text()):
                _stop(int(server))


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def _warm(root: Path, env: dict, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return run([PYTHON, "-m", "cnnlab.launch.forkserver", *JOB, "data.arrays=data/cifar10.npz", *overrides], root,
               timeout=timeout, env=env)  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow  # trains the same job warm and cold
def test_a_warm_job_gives_the_cold_jobs_results_to_the_last_digit(project):
    root, env = project
    cold = run([PYTHON, "-m", "cnnlab.training.train", *JOB, "data.arrays=data/cifar10.npz", "trainer.max_epochs=3",
                "run.dir=runs/cold"], root, env=env)  # fmt: skip
    assert cold.returncode == 0, cold.stderr[-3000:]
    assert not FORKED.search(cold.stderr)
    servers = set()
    for name in ("warm1", "warm2"):  # the first starts the warm process, the second is forked at once
        proc = _warm(root, env, "trainer.max_epochs=3", f"run.dir=runs/{name}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        job, server = FORKED.search(proc.stderr).groups()
        assert job != server
        servers.add(server)
        (root / f"{name}.log").write_text(proc.stderr)
    assert len(servers) == 1
    a, b, c = (read_json(root / "runs" / name / "result.json") for name in ("cold", "warm1", "warm2"))
    for key in ("test_acc", "test_loss", "best_val_acc", "epochs", "params"):
        assert a[key] == b[key] == c[key], key
    assert b["mlflow_run_id"] != c["mlflow_run_id"]
    # Start-up counts from the job's own process start, not from the fork.
    assert 0 < c["startup_seconds"] <= c["process_seconds"]

    # z-scored from the warm process's shared [0, 1] images (cnnlab.data.datamodule.preload): the same.
    zscore = ("data=zscore", "trainer.max_epochs=2")
    cold = run([PYTHON, "-m", "cnnlab.training.train", *JOB, "data.arrays=data/cifar10.npz", *zscore,
                "run.dir=runs/cold-z"], root, env=env)  # fmt: skip
    warm = _warm(root, env, *zscore, "run.dir=runs/warm-z")
    assert cold.returncode == 0 and warm.returncode == 0, (cold.stderr + warm.stderr)[-3000:]
    assert FORKED.search(warm.stderr).group(2) in servers
    a, b = (read_json(root / "runs" / name / "result.json") for name in ("cold-z", "warm-z"))
    for key in ("test_acc", "test_loss", "best_val_acc"):
        assert a[key] == b[key], key


def test_a_mistake_is_the_same_sentence_and_exit_status_warm(project):
    root, env = project
    proc = _warm(root, env, "trainer.max_epochs=1", "model.dropout=1.5", "run.dir=runs/bad")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert FORKED.search(proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("cnnlab-train: error:")]
    assert len(errors) == 1 and "dropout" in errors[0]
    assert "Traceback" not in proc.stderr


def _start_long_job(root: Path, env: dict, name: str) -> tuple[subprocess.Popen, Path, int]:
    log = root / f"{name}.log"
    proc = subprocess.Popen(
        [PYTHON, "-m", "cnnlab.launch.forkserver", *JOB, "data.arrays=data/cifar10.npz", "trainer.max_epochs=400",
         f"run.dir=runs/{name}"],
        cwd=root, stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1", **env},
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not (log.exists() and "epoch 1:" in log.read_text()):
        assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.2)
    return proc, log, int(FORKED.search(log.read_text()).group(1))


def test_ps_names_the_forked_job_as_the_training_command_it_runs(project):
    root, env = project
    proc, log, job = _start_long_job(root, env, "named")
    try:
        cmdline = Path(f"/proc/{job}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert "-m cnnlab.training.train" in cmdline and "run.dir=runs/named" in cmdline, cmdline
        assert "forkserver" not in cmdline
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)


def test_sigterm_to_the_job_stops_the_forked_training_as_it_stops_a_cold_one(project):
    root, env = project
    proc, log, job = _start_long_job(root, env, "terminated")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, log.read_text()[-3000:]
    assert _wait_gone(job, 30)
    text = log.read_text()
    assert "stopped by SIGTERM" in text and "Traceback" not in text
    state = read_json(root / "runs" / "terminated" / "state.json")
    from mlflow.tracking import MlflowClient

    run_info = MlflowClient(f"sqlite:///{root / 'mlflow.db'}").get_run(state["mlflow_run_id"]).info
    assert run_info.status == "KILLED"


def test_a_job_killed_outright_takes_its_forked_training_with_it(project):
    # SIGKILL cannot be passed on: the training sees its job's socket close and stops as on SIGTERM.
    root, env = project
    proc, log, job = _start_long_job(root, env, "killed")
    proc.kill()
    proc.wait(timeout=30)
    assert _wait_gone(job, 60), log.read_text()[-3000:]
    assert "stopped by SIGTERM" in log.read_text()


def test_the_training_process_killed_outright_fails_its_job_in_one_sentence(project):
    root, env = project
    proc, log, job = _start_long_job(root, env, "oom")
    os.kill(job, signal.SIGKILL)  # as the kernel's out-of-memory killer would
    assert proc.wait(timeout=60) == 1
    assert "ended without an exit status" in log.read_text()


def test_without_a_private_socket_folder_or_when_turned_off_jobs_start_cold(project, tmp_path):
    root, env = project
    shared = tmp_path / "rt"
    (shared / f"cnnlab-{os.getuid()}").mkdir(parents=True)
    (shared / f"cnnlab-{os.getuid()}").chmod(0o777)  # anyone could plant a socket there
    for name, extra in (("shared", {"XDG_RUNTIME_DIR": str(shared)}), ("off", {"CNNLAB_WARM_START": "0"})):
        proc = _warm(root, {**env, **extra}, "trainer.max_epochs=1", f"run.dir=runs/{name}", "tracking=none")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert not FORKED.search(proc.stderr)
        assert read_json(root / "runs" / name / "result.json")["status"] == "FINISHED"
    assert not list((shared / f"cnnlab-{os.getuid()}").iterdir())


def test_the_warm_process_ends_after_its_idle_time_and_removes_its_files():
    with _new_project("cnnlab-idle-", "2") as (root, env):
        folder = _sockets_folder(env)
        folder.mkdir(mode=0o700)
        # What a warm process killed outright (SIGKILL) leaves: its lock file and empty log. A log
        # with something in it stays, for whoever wants to read why.
        for name in ("warm-00000000000000000000.lock", "warm-00000000000000000000.log"):
            (folder / name).touch()
        (folder / "warm-11111111111111111111.log").write_text("cnnlab: something to read\n")
        proc = _warm(root, env, "trainer.max_epochs=1", "run.dir=runs/idle", "tracking=none")
        assert proc.returncode == 0, proc.stderr[-3000:]
        server = int(FORKED.search(proc.stderr).group(2))
        assert {p.suffix for p in folder.iterdir()} == {".sock", ".lock", ".log"}  # its own, in use
        assert not (folder / "warm-00000000000000000000.lock").exists()
        assert _wait_gone(server, 60)
        assert [p.name for p in folder.iterdir()] == ["warm-11111111111111111111.log"]


def test_the_warm_process_refuses_a_path_outside_its_private_folder(tmp_path):
    # It replaces its socket file and removes it when idle: never any other file.
    victim = tmp_path / "warm-x.sock"
    victim.write_text("keep me")
    for path in (victim, tmp_path / "notes.txt"):
        proc = run([PYTHON, "-m", "cnnlab.launch.forkserver", "--serve", str(path)], tmp_path, timeout=120)
        assert proc.returncode == 2 and "is not a warm-process socket" in proc.stderr
    assert victim.read_text() == "keep me"


def _servers(sock: Path) -> list[int]:
    """Pids of the warm processes serving sock (their command line names it; setproctitle may have
    joined its arguments with spaces)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            line = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if f"--serve {sock}".encode() in line:
            found.append(int(proc.name))
    return found


def test_prestart_leaves_a_warm_process_ready_for_the_jobs_that_follow():
    with _new_project("cnnlab-pre-", "30") as (root, env):
        off = run([PYTHON, "-m", "cnnlab.launch.forkserver", "--prestart"], root, env={**env, "CNNLAB_WARM_START": "0"})
        assert off.returncode == 0 and not _sockets_folder(env).exists()

        pre = run([PYTHON, "-m", "cnnlab.launch.forkserver", "--prestart"], root, timeout=300, env=env)
        assert pre.returncode == 0 and pre.stdout == pre.stderr == ""
        (sock,) = _sockets_folder(env).glob("*.sock")
        (server,) = _servers(sock)
        proc = _warm(root, env, "trainer.max_epochs=1", "run.dir=runs/pre", "tracking=none")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert int(FORKED.search(proc.stderr).group(2)) == server  # the job came from it, none other started
        assert _servers(sock) == [server]
        _stop(server)  # SIGTERM ends it as its idle time would: its files go
        assert _wait_gone(server, 60)
        assert not list(_sockets_folder(env).iterdir())
