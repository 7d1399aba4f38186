"""Interrupted, faulty or crowded: real processes, real SIGKILL, real Snakemake."""

import csv
import io
import os
import signal
import subprocess
import time

import pytest
from mlflow import MlflowClient

from tests.helpers import SNAKEMAKE, copy_workflow, read_json, run, tiny_prepared, train_cmd
from tests.tiny_cifar import write_tiny_archive

pytestmark = pytest.mark.slow

RESUME_STUDY = """
seeds: [0]
overrides: [trainer.max_epochs=4, trainer.batch_size=16, optimizer=adam, augment=shift_flip]
variants:
  cnn_small:
    adds: baseline
    overrides: [model=cnn, "model.channels=[8,16]", "model.hidden=[32]", model.dropout=0.2]
"""

FAULTY_STUDY = """
seeds: [0]
overrides: [trainer.max_epochs=2, "model.hidden=[16]", optimizer=adam]
variants:
  mlp_ok:
    adds: baseline
    overrides: [model=mlp]
  mlp_diverges:
    adds: an absurd learning rate
    overrides: [model=mlp, optimizer=sgd, optimizer.lr=1e12, trainer.nan_check_every=1]
"""

CROWD_STUDY = (
    'seeds: [0]\noverrides: [trainer.max_epochs=3, "model.hidden=[16]", optimizer=adam]\nvariants:\n'
    + "".join(
        f"  mlp_{i}:\n    adds: copy {i}\n    overrides: [model=mlp, optimizer.lr={0.001 * (i + 1)}]\n"
        for i in range(8)
    )
)


def _workflow(tmp_path, name, study, n_per_batch=100):
    wd = copy_workflow(tmp_path / name, {name: study})
    md5 = write_tiny_archive(tmp_path / f"{name}.tar.gz", n_per_batch)
    n = 5 * n_per_batch
    config = ["--config", f"study={name}", f"data_url=file://{tmp_path / f'{name}.tar.gz'}", f"data_md5={md5}",
              f"train_records={n}", f"test_records={n_per_batch}", f"val_size={n // 10}"]
    base = [SNAKEMAKE, "-s", str(wd / "Snakefile"), "--directory", str(wd)]
    return wd, base, config


def _sm(cmd, timeout=900):
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )


def _histories(client, run_id):
    names = ("train/loss", "train/acc", "val/loss", "val/acc", "lr")
    return {n: [(m.step, m.value) for m in client.get_metric_history(run_id, n)] for n in names}


def test_sigkill_mid_epoch_then_rerun_resumes_the_same_run_with_identical_results(tmp_path):
    results = {}
    for name in ("straight", "killed"):
        wd, base, config = _workflow(tmp_path, name, RESUME_STUDY, n_per_batch=300)
        target = f"results/{name}/runs/cnn_small/seed0/result.json"
        if name == "killed":
            log = wd / "logs" / name / "train" / "cnn_small-seed0.log"
            proc = subprocess.Popen([*base, "--cores", "1", *config, "--", target], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
            deadline = time.monotonic() + 600
            while not (log.exists() and "epoch 1:" in log.read_text()):
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
            time.sleep(0.5)  # now inside epoch 2
            pids = subprocess.run(
                ["pgrep", "-f", f"cnnlab.training.train.*study={name}"], capture_output=True, text=True
            ).stdout.split()
            assert pids
            for pid in pids:
                os.kill(int(pid), signal.SIGKILL)
            proc.wait(timeout=120)
            assert proc.returncode != 0
            assert not (wd / target).exists()
            state = read_json(wd / "results" / name / "runs" / "cnn_small" / "seed0" / "state.json")
            run_id_before = state["mlflow_run_id"]
        done = _sm([*base, "--cores", "1", "--rerun-incomplete", *config, "--", target])
        assert done.returncode == 0, done.stderr[-3000:]
        result = read_json(wd / target)
        client = MlflowClient(f"sqlite:///{wd / 'results' / 'mlflow.db'}")
        results[name] = (result, _histories(client, result["mlflow_run_id"]), client.get_run(result["mlflow_run_id"]))
        if name == "killed":
            assert result["mlflow_run_id"] == run_id_before
            assert "resuming from" in log.read_text()
    (a, hist_a, _), (b, hist_b, run_b) = results["straight"], results["killed"]
    assert b["test_acc"] == a["test_acc"] and b["test_loss"] == a["test_loss"]
    assert hist_b == hist_a  # every epoch once, same values to the last digit
    assert [s for s, _ in hist_b["val/acc"]] == [0, 1, 2, 3]
    assert run_b.info.status == "FINISHED"


def test_a_diverging_variant_fails_alone_and_the_report_shows_it(tmp_path):
    wd, base, config = _workflow(tmp_path, "faulty", FAULTY_STUDY)
    proc = _sm([*base, "--cores", "2", "--keep-going", *config])
    assert proc.returncode != 0
    assert (wd / "results/faulty/runs/mlp_ok/seed0/result.json").exists()
    assert not (wd / "results/faulty/runs/mlp_diverges/seed0/result.json").exists()
    log = (wd / "logs/faulty/train/mlp_diverges-seed0.log").read_text()
    assert "The training loss became nan" in log or "The training loss became inf" in log
    rows = {r["variant"]: r for r in csv.DictReader(open(wd / "results/faulty/report/summary.csv"))}
    assert rows["mlp_ok"]["status"] == "ok" and rows["mlp_diverges"]["status"] == "failed"
    client = MlflowClient(f"sqlite:///{wd / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("faulty")
    status = {
        r.data.tags["variant"]: r.info.status
        for r in client.search_runs([exp.experiment_id], "tags.`cnnlab.kind` = 'train'")
    }
    assert status == {"mlp_ok": "FINISHED", "mlp_diverges": "FAILED"}


def test_eight_jobs_at_once_on_one_sqlite_store_lose_nothing(tmp_path):
    wd, base, config = _workflow(tmp_path, "crowd", CROWD_STUDY)
    prep = _sm([*base, "--cores", "2", *config, "--", "results/crowd/tracking.json"])
    assert prep.returncode == 0, prep.stderr[-3000:]
    proc = _sm(
        [*base, "--cores", "8", *config, "--", *[f"results/crowd/runs/mlp_{i}/seed0/result.json" for i in range(8)]]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = "".join(p.read_text() for p in (wd / "logs/crowd/train").glob("*.log"))
    assert "database is locked" not in logs
    client = MlflowClient(f"sqlite:///{wd / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("crowd")
    runs = client.search_runs([exp.experiment_id], "tags.`cnnlab.kind` = 'train'")
    assert sorted(r.data.tags["variant"] for r in runs) == [f"mlp_{i}" for i in range(8)]
    for r in runs:
        assert r.info.status == "FINISHED"
        for name in ("train/loss", "train/acc", "val/loss", "val/acc", "lr", "epoch_seconds"):
            assert [m.step for m in client.get_metric_history(r.info.run_id, name)] == [0, 1, 2], (
                r.data.tags["variant"],
                name,
            )
        assert "test/acc" in r.data.metrics


def test_sigterm_ends_the_job_as_killed_and_the_same_command_resumes_it(tmp_path):
    # A scheduler's preemption or a plain `kill`: Lightning turns SIGTERM into an exit status of 0.
    arrays = tiny_prepared(tmp_path / "data", n_per_batch=300)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = train_cmd("model=mlp", "model.hidden=[64]", "trainer.max_epochs=40", "trainer.batch_size=16",
                    f"data.arrays={arrays}", f"tracking.uri={uri}", f"run.dir={tmp_path / 'run'}")  # fmt: skip
    log = tmp_path / "first.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
        deadline = time.monotonic() + 300
        while "epoch 1:" not in log.read_text():
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM, log.read_text()[-3000:]
    assert "stopped by SIGTERM" in log.read_text() and "Traceback" not in log.read_text()
    assert not (tmp_path / "run" / "result.json").exists()
    run_id = read_json(tmp_path / "run" / "state.json")["mlflow_run_id"]
    client = MlflowClient(uri)
    assert client.get_run(run_id).info.status == "KILLED"

    again = run(cmd, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stderr
    assert read_json(tmp_path / "run" / "result.json")["mlflow_run_id"] == run_id
    assert client.get_run(run_id).info.status == "FINISHED"


def test_killing_the_whole_workflow_then_rerunning_leaves_no_run_running_and_the_report_of_a_straight_run(tmp_path):
    reports = {}
    for name in ("straight", "killed"):
        wd, base, config = _workflow(tmp_path, name, RESUME_STUDY, n_per_batch=300)
        if name == "killed":
            # Snakemake, its warm process and every job in one process group, killed outright mid-epoch.
            proc = subprocess.Popen([*base, "--cores", "1", *config], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                    start_new_session=True)
            log = wd / "logs" / name / "train" / "cnn_small-seed0.log"
            deadline = time.monotonic() + 600
            while not (log.exists() and "epoch 1:" in log.read_text()):
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=120)
            time.sleep(1)
            assert subprocess.run(["pgrep", "-f", f"study={name}"], capture_output=True).returncode == 1
            assert _sm([*base, "--unlock", *config]).returncode == 0
        done = _sm([*base, "--cores", "1", "--rerun-incomplete", *config])
        assert done.returncode == 0, done.stderr[-3000:]
        client = MlflowClient(f"sqlite:///{wd / 'results' / 'mlflow.db'}")
        runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
        assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
        report = wd / "results" / name / "report"
        reports[name] = [(report / f).read_text() for f in ("summary.csv", "claims.csv")]
    # The same numbers as a run never interrupted: the summary's and the claims' tables alike but for
    # the columns that time the run.
    import pandas as pd

    straight, killed = ([pd.read_csv(io.StringIO(t)) for t in reports[k]] for k in ("straight", "killed"))
    timing = ["train_seconds_mean", "images_per_sec_mean"]
    pd.testing.assert_frame_equal(straight[0].drop(columns=timing), killed[0].drop(columns=timing))
    pd.testing.assert_frame_equal(straight[1], killed[1])
