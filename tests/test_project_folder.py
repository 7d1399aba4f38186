"""The project folder as a user has it: found profile, any path, moved between runs, no secret kept."""

import json
import os
import shutil
import socket
import stat
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest
from mlflow import MlflowClient

from cnnlab.data.download import fetch_archive
from tests.helpers import PYTHON, SNAKEMAKE, copy_workflow, read_json, run
from tests.tiny_cifar import write_tiny_archive

TINY = ["train_records=500", "test_records=100", "val_size=100"]
PASSWORD = "s3cr3t-Pa55"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _all_text(folder: Path) -> str:
    return "".join(p.read_bytes().decode("latin-1") for p in sorted(folder.rglob("*")) if p.is_file())


@pytest.fixture
def archive(tmp_path):
    path = tmp_path / "archive" / "cifar-10-binary.tar.gz"
    path.parent.mkdir()
    return path, write_tiny_archive(path, 100)


def test_plain_snakemake_finds_the_profile_and_shows_a_failed_job_s_own_sentence(tmp_path, archive):
    path, _ = archive
    wd = copy_workflow(tmp_path / "wd")
    wrong = "d41d8cd98f00b204e9800998ecf8427e"  # the MD5 of nothing
    proc = run([SNAKEMAKE, "--config", "study=smoke", f"data_url={path.as_uri()}", f"data_md5={wrong}", *TINY], cwd=wd)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Using workflow specific profile profiles/default" in out
    assert "cores have to be specified" not in out
    assert "Logfile logs/download_archive.log:" in out  # show-failed-logs
    assert f"but {wrong} was expected; the file was removed" in out  # the job's own sentence


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_the_downloaded_archive_has_the_usual_permissions(tmp_path, archive, umask):
    path, md5 = archive
    old = os.umask(umask)
    try:
        dest = fetch_archive(path.as_uri(), md5, tmp_path / "resources" / "cifar-10-binary.tar.gz")
        (tmp_path / "other").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(Path(dest).stat().st_mode) == stat.S_IMODE((tmp_path / "other").stat().st_mode)
    assert stat.S_IMODE(Path(dest).stat().st_mode) == 0o666 & ~umask


@pytest.mark.slow  # a whole study through snakemake
def test_no_secret_of_the_tracking_uri_reaches_the_console_logs_or_snakemake_metadata(tmp_path, archive):
    path, md5 = archive
    wd = copy_workflow(tmp_path / "wd")
    uri = f"http://alice-user:{PASSWORD}@127.0.0.1:{_closed_port()}"
    config = ["--config", "study=smoke", f"data_url={path.as_uri()}", f"data_md5={md5}", *TINY]
    dry = run([SNAKEMAKE, "--dry-run", "--printshellcmds", *config, f"tracking_uri={uri}"], cwd=wd)
    assert dry.returncode == 0, dry.stderr[-3000:]
    # Snakemake echoes its own command line (as the shell history keeps it); nothing else shows it.
    shown = [line for line in (dry.stdout + dry.stderr).splitlines() if PASSWORD in line]
    assert all(line.strip().startswith("Command: ") for line in shown), shown
    env = {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    }
    proc = run([SNAKEMAKE, *config], cwd=wd, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "The MLflow tracking store http://127.0.0.1:" in out and "cannot be reached" in out
    assert PASSWORD not in out
    for folder in (".snakemake", "logs", "results"):
        assert PASSWORD not in _all_text(wd / folder), folder


ODD = "my project ü $(touch PWNED) 'q' & co; x"
MOVED = 'moved – naïve "dir" $HOME'


@pytest.mark.slow
def test_a_project_in_an_odd_folder_can_be_moved_and_a_damaged_artifact_costs_only_its_figure(tmp_path, archive):
    path, md5 = archive
    wd = copy_workflow(tmp_path / ODD)
    config = ["--config", "study=smoke", f"data_url={path.as_uri()}", f"data_md5={md5}", *TINY]
    first = run([SNAKEMAKE, *config], cwd=wd)
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    assert not list(tmp_path.rglob("PWNED"))
    runs = wd / "results" / "smoke" / "runs"
    run_ids = {
        v: read_json(runs / v / "seed0" / "state.json")["mlflow_run_id"] for v in ("mlp_baseline", "cnn_baseline")
    }
    # As if the cnn job had been killed after its last epoch: its result and the report are not
    # there yet, its checkpoints are.
    (runs / "cnn_baseline" / "seed0" / "result.json").unlink()
    shutil.rmtree(wd / "results" / "smoke" / "report")

    moved = tmp_path / MOVED
    shutil.move(wd, moved)
    dry = run([SNAKEMAKE, "--dry-run", *config], cwd=moved)
    assert dry.returncode == 0, dry.stderr[-3000:]
    planned = dry.stdout + dry.stderr
    assert "variant=cnn_baseline" in planned and "variant=mlp_baseline" not in planned  # only the unfinished one

    again = run([SNAKEMAKE, *config], cwd=moved)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert not wd.exists()  # nothing recreated the old folder
    client = MlflowClient(f"sqlite:///{moved / 'results' / 'mlflow.db'}")
    for variant, run_id in run_ids.items():
        r = client.get_run(run_id)
        assert r.info.status == "FINISHED"
        assert r.info.artifact_uri.startswith((moved / "results" / "mlartifacts").as_uri())
        assert (
            read_json(moved / "results" / "smoke" / "runs" / variant / "seed0" / "state.json")["mlflow_run_id"]
            == run_id
        )
    nothing = run([SNAKEMAKE, "--dry-run", *config], cwd=moved)
    assert "Nothing to be done" in nothing.stdout + nothing.stderr

    # One damaged artifact: the report still builds, and only figures needing that network lose it.
    artifacts = urlparse(client.get_run(run_ids["cnn_baseline"]).info.artifact_uri)
    best = Path(url2pathname(artifacts.path), "checkpoints")
    (best / "best.ckpt").write_bytes(b"not a checkpoint")
    report = run([SNAKEMAKE, "--forcerun", "build_report", *config], cwd=moved)
    assert report.returncode == 0, (report.stdout + report.stderr)[-4000:]
    log = (moved / "logs" / "smoke" / "build_report.log").read_text()
    assert "its checkpoints/best.ckpt artifact is damaged" in log
    html = (moved / "results" / "smoke" / "report" / "report.html").read_text()
    assert "mlp_baseline" in html and "cnn_baseline" in html
    summary = json.dumps((moved / "results" / "smoke" / "report" / "summary.csv").read_text())
    assert "cnn_baseline" in summary


def _store_with_an_artifact(folder: Path) -> tuple[str, str]:
    from cnnlab.tracking.store import connect, ensure_experiment

    db = folder / "results" / "mlflow.db"
    client = connect(f"sqlite:///{db}")
    experiment = ensure_experiment(client, "study", db.parent / "mlartifacts" / "study")
    run_id = client.create_run(experiment).info.run_id
    (folder / "note.txt").write_text("kept")
    client.log_artifact(run_id, str(folder / "note.txt"))
    client.set_terminated(run_id, "FINISHED")
    return experiment, run_id


def _follow_the_move(project: Path) -> str:
    """What a user runs after moving a project folder by hand (the workflow does it as it starts)."""
    proc = run([PYTHON, "-m", "cnnlab.tracking.relocation", "results/mlflow.db"], cwd=project)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("name", ["moved", "moved with space ü $x"])
def test_the_store_s_artifacts_follow_a_moved_folder(tmp_path, name):
    from cnnlab.tracking.store import connect

    experiment, run_id = _store_with_an_artifact(tmp_path / "project")
    new = tmp_path / name
    shutil.move(tmp_path / "project", new)
    assert _follow_the_move(new).startswith("2 artifact locations changed")  # the experiment and its run
    client = connect(f"sqlite:///{new / 'results' / 'mlflow.db'}")
    root = (new / "results" / "mlartifacts").as_uri()
    assert client.get_experiment(experiment).artifact_location.startswith(root)
    assert client.get_run(run_id).info.artifact_uri.startswith(root)
    got = client.download_artifacts(run_id, "note.txt", str(tmp_path))
    assert Path(got).read_text() == "kept"
    assert not (tmp_path / "project").exists()  # never recreated


def test_a_copy_beside_the_original_folder_keeps_its_store_as_it_is(tmp_path):
    from cnnlab.tracking.store import connect

    experiment, run_id = _store_with_an_artifact(tmp_path / "project")
    shutil.copytree(tmp_path / "project", tmp_path / "copy")
    assert _follow_the_move(tmp_path / "copy").startswith("0 artifact locations changed")
    client = connect(f"sqlite:///{tmp_path / 'copy' / 'results' / 'mlflow.db'}")
    assert client.get_run(run_id).info.artifact_uri.startswith((tmp_path / "project").as_uri())
