"""A busy, full or vanished MLflow store: waited for within a bound, then one sentence; no run left RUNNING."""

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from cnnlab.errors import StoreError
from cnnlab.tracking.abandoned_runs import close_abandoned_runs
from cnnlab.tracking.store import connect, ensure_experiment, store_failure, with_retry
from tests.helpers import read_json, run, tiny_prepared, train_cmd
from tests.test_storage import mounted  # noqa: F401 (the tmpfs fixture)


def _store(path):
    uri = f"sqlite:///{path}"
    client = connect(uri)
    return uri, client, ensure_experiment(client, "store", path.parent / "mlartifacts")


def _hold_lock(db, seconds: float) -> subprocess.Popen:
    """Another process holding SQLite's write lock on db for `seconds` (a long write, a stuck job)."""
    code = (
        "import sqlite3, sys, time\n"
        f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
        "c.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        f"time.sleep({seconds})\n"
        "c.execute('ROLLBACK')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _train_tiny(tmp_path, arrays, uri: str, *extra: str):
    """One epoch of a tiny MLP tracked in uri, its folder tmp_path/run."""
    cmd = train_cmd("model=mlp", "model.hidden=[8]", "trainer.max_epochs=1", f"data.arrays={arrays}",
                    f"tracking.uri={uri}", *extra, f"run.dir={tmp_path / 'run'}")  # fmt: skip
    return run(cmd, cwd=tmp_path)


def _real_sqlite_error(db, statement_setup, statement):
    con = sqlite3.connect(db)
    try:
        for s in statement_setup:
            con.execute(s)
        con.execute(statement)
    except sqlite3.Error as e:
        return e
    finally:
        con.close()
    raise AssertionError("no error")


def test_sqlite_errors_are_told_apart(tmp_path):
    db = tmp_path / "x.db"
    full = _real_sqlite_error(
        db,
        ["CREATE TABLE t (x BLOB)", "PRAGMA max_page_count = 3"],
        "INSERT INTO t VALUES (zeroblob(100000))",
    )
    assert "database or disk is full" in str(full)
    assert store_failure(full) == "full"
    ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as e:
        ro.execute("INSERT INTO t VALUES (1)")
    ro.close()
    assert store_failure(e.value) == "read-only"
    assert store_failure(ValueError("database or disk is full")) is None  # not a store's error


@pytest.mark.parametrize(
    ("message", "kind", "sentence"),
    [
        ("database or disk is full", "full", "no space left on the device; free some space"),
        ("attempt to write a readonly database", "read-only", "it is read-only; make the results folder writable"),
        ("database is locked", "locked", "stayed locked for"),
    ],
)
def test_a_store_that_keeps_failing_is_one_sentence_within_the_bound(tmp_path, message, kind, sentence):
    calls = []

    def failing():
        calls.append(time.monotonic())
        raise sqlite3.OperationalError(message)

    start = time.monotonic()
    with pytest.raises(StoreError) as e:
        with_retry(failing, wait_s=1.5, doing="closing its run", uri="sqlite:///results/mlflow.db")
    assert time.monotonic() - start < 3  # bounded
    assert len(calls) >= 2  # retried first
    text = str(e.value)
    assert text.startswith("The MLflow tracking store sqlite:///results/mlflow.db ") and sentence in text
    assert "while closing its run" in text and "\n" not in text


def test_a_store_locked_when_a_job_starts_is_waited_out(tmp_path):
    uri, _, _ = _store(tmp_path / "mlflow.db")
    holder = _hold_lock(tmp_path / "mlflow.db", 6)
    start = time.monotonic()
    client = connect(uri, wait_s=60)
    assert ensure_experiment(client, "after the lock", tmp_path / "mlartifacts")
    assert time.monotonic() - start >= 4  # it did wait for the lock
    holder.wait(timeout=30)


@pytest.mark.slow
def test_a_store_locked_longer_than_the_bound_is_one_sentence(tmp_path):
    uri, _, _ = _store(tmp_path / "mlflow.db")
    # Held until the test ends: opening MLflow's store may meet SQLite's 20 s busy wait more than
    # once, and a lock that ends on its own first would let the store open.
    holder = _hold_lock(tmp_path / "mlflow.db", 600)
    try:
        start = time.monotonic()
        with pytest.raises(StoreError, match=r"stayed locked for \d+ s while connecting"):
            client = connect(uri, wait_s=1)
            ensure_experiment(client, "x", tmp_path / "mlartifacts")
        assert time.monotonic() - start < 150  # the bound and the busy waits of the attempts under way
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_a_training_job_started_under_a_lock_waits_and_finishes(tmp_path):
    arrays = tiny_prepared(tmp_path / "data")
    uri, _, _ = _store(tmp_path / "mlflow.db")
    holder = _hold_lock(tmp_path / "mlflow.db", 12)
    proc = _train_tiny(tmp_path, arrays, uri)
    holder.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "start the server" not in proc.stderr
    run_id = read_json(tmp_path / "run" / "state.json")["mlflow_run_id"]
    assert MlflowClient(uri).get_run(run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_a_store_locked_in_the_middle_of_a_run_ends_the_job_in_one_sentence_and_the_run_is_closed(tmp_path):
    arrays = tiny_prepared(tmp_path / "data")
    uri, client, _ = _store(tmp_path / "mlflow.db")
    cmd = train_cmd("model=mlp", "model.hidden=[8]", "trainer.max_epochs=400", f"data.arrays={arrays}",
                    f"tracking.uri={uri}", "tracking.retry_s=2", f"run.dir={tmp_path / 'runs/v/seed0'}")  # fmt: skip
    job = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 300
    while not _logged_epochs(tmp_path / "mlflow.db"):  # the run exists and has logged an epoch
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()[1][-3000:]
        time.sleep(0.5)
    holder = _hold_lock(tmp_path / "mlflow.db", 600)
    try:
        _, err = job.communicate(timeout=240)
    finally:
        holder.kill()
        holder.wait()
    assert job.returncode != 0
    assert "stayed locked for" in err and "run the same command again to resume" in err, err[-3000:]
    assert "Traceback" not in err
    # The job could not write its own end while the store was locked; the workflow's next start
    # closes the run (cnnlab.tracking.abandoned_runs), and no run stays RUNNING.
    assert len(close_abandoned_runs(uri, [tmp_path / "runs"])) == 1
    run_id = read_json(tmp_path / "runs/v/seed0/state.json")["mlflow_run_id"]
    assert client.get_run(run_id).info.status == "KILLED"


def _logged_epochs(db) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("select count(*) from metrics where key = 'val/acc'").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_a_full_disk_under_the_store_is_one_sentence_and_leaves_no_run_running(tmp_path, mounted):  # noqa: F811
    arrays = tiny_prepared(tmp_path / "data")
    disk = mounted("disk", "size=2m")
    uri, client, experiment = _store(disk / "mlflow.db")
    filler = disk / "filler"
    with open(filler, "wb") as f:  # fill what is left of the disk
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    proc = _train_tiny(tmp_path, arrays, uri, "tracking.retry_s=2")
    assert proc.returncode != 0
    assert "no space left on the device; free some space" in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    filler.unlink()
    statuses = [r.info.status for r in MlflowClient(uri).search_runs([experiment])]
    assert "RUNNING" not in statuses


def test_runs_whose_jobs_were_killed_outright_are_marked_killed(tmp_path):
    uri, client, experiment = _store(tmp_path / "mlflow.db")
    runs = tmp_path / "results" / "study" / "runs"
    ids = {}
    for variant, finished, store in (
        ("killed", False, uri),
        ("done", True, uri),
        ("elsewhere", False, "sqlite:///x.db"),
    ):
        run_id = client.create_run(experiment, run_name=variant).info.run_id
        folder = runs / variant / "seed0"
        folder.mkdir(parents=True)
        (folder / "state.json").write_text(json.dumps({"mlflow_run_id": run_id, "tracking_uri": store}))
        if finished:
            (folder / "result.json").write_text("{}")
        ids[variant] = run_id
    assert close_abandoned_runs(uri, [runs]) == [ids["killed"]]
    status = {v: client.get_run(i).info.status for v, i in ids.items()}
    assert status == {"killed": "KILLED", "done": "RUNNING", "elsewhere": "RUNNING"}
    assert "run the workflow again to resume it" in client.get_run(ids["killed"]).data.tags["error"]
    assert close_abandoned_runs(uri, [runs]) == []  # once
