"""Damaged files: a checkpoint is moved aside and the job goes on, an artifact costs only its figure,
a prepared data set is refused with the exact command that rebuilds it."""

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from cnnlab.data.preprocess import check_prepared, load_arrays
from cnnlab.errors import UserError
from cnnlab.report.build import build_report
from cnnlab.study.studies import CONF_DIR
from tests.helpers import SNAKEMAKE, copy_workflow, read_json, run, tiny_prepared, train_cmd

REBUILD = "then run snakemake again: it prepares them again from the downloaded archive"


@pytest.fixture
def prepared(tmp_path):
    return tiny_prepared(tmp_path / "prepared")


def _cut_short(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _object_array_npz(path):
    arrays = dict(np.load(path))
    arrays["x_train"] = np.array([{"a": 1}], dtype=object)  # loading it would need allow_pickle
    np.savez(path.with_suffix(".tmp.npz"), **arrays)
    path.with_suffix(".tmp.npz").replace(path)


def _drop_array(path):
    arrays = dict(np.load(path))
    del arrays["y_test"]
    np.savez(path.with_suffix(".tmp.npz"), **arrays)
    path.with_suffix(".tmp.npz").replace(path)


DAMAGES = {
    "npz cut short": (lambda a: _cut_short(a), "not a readable .npz"),
    "npz overwritten": (lambda a: a.write_bytes(b"not a zip file at all" * 100), "not a readable .npz"),
    "npz object array": (_object_array_npz, "is not the array prepare_data writes"),
    "npz array missing": (lambda a: _drop_array(a), "it has no array 'y_test'"),
    "json cut short": (lambda a: _cut_short(a.with_suffix(".json"), 0.3), "cifar10.json is not readable JSON"),
    "json without statistics": (
        lambda a: a.with_suffix(".json").write_text('{"classes": ["a"]}'),
        "cifar10.json lacks the class names or the channel statistics",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_prepared_data_set_is_one_sentence_that_says_how_to_rebuild_it(prepared, damage):
    check_prepared(prepared)  # intact
    do, why = DAMAGES[damage]
    do(prepared)
    with pytest.raises(UserError) as e:
        check_prepared(prepared)
    message = str(e.value)
    assert why in message and REBUILD in message and f"delete {prepared} and {prepared.with_suffix('.json')}" in message
    assert "allow_pickle" not in message and "\n" not in message


def test_loading_a_damaged_data_set_never_suggests_allow_pickle(prepared):
    _object_array_npz(prepared)
    with pytest.raises(UserError) as e:
        load_arrays(prepared)
    assert "allow_pickle" not in str(e.value) and REBUILD in str(e.value)


@pytest.mark.parametrize("damage", ["npz cut short", pytest.param("json cut short", marks=pytest.mark.slow)])
def test_the_workflow_refuses_a_damaged_data_set_before_any_job(tmp_path, prepared, damage):
    wd = copy_workflow(tmp_path / "wd")
    (wd / "results" / "data").mkdir(parents=True)
    for suffix in (".npz", ".json"):
        (wd / "results" / "data" / f"cifar10{suffix}").write_bytes(prepared.with_suffix(suffix).read_bytes())
    DAMAGES[damage][0](wd / "results" / "data" / "cifar10.npz")
    proc = run([SNAKEMAKE, "--cores", "1", "--config", "study=smoke"], cwd=wd)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "The prepared data set results/data/cifar10.npz is damaged" in out
    assert "delete results/data/cifar10.npz and results/data/cifar10.json, " + REBUILD in out
    assert "Traceback" not in out and not (wd / "results" / "mlflow.db").exists()


def _train(tmp_path, arrays, *extra):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = train_cmd(
        "study=smoke",
        "variant=mlp_baseline",
        "seed=0",
        "trainer.max_epochs=2",
        f"data.arrays={arrays}",
        f"tracking.uri={uri}",
        f"run.dir={tmp_path / 'run'}",
        *extra,
    )
    return run(cmd, cwd=tmp_path), MlflowClient(uri)


@pytest.mark.parametrize(
    ("damaged", "expected"),
    [
        (("last.ckpt",), "resuming from"),  # best.ckpt is intact: the job resumes from it
        # two trainings more: in the slow run
        pytest.param(("last.ckpt", "best.ckpt"), "training starts again from the first epoch", marks=pytest.mark.slow),
    ],
)
def test_a_damaged_checkpoint_is_moved_aside_and_the_job_finishes_in_the_same_run(
    tmp_path, prepared, damaged, expected
):
    first, client = _train(tmp_path, prepared)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = tmp_path / "run"
    run_id = json.loads((run_dir / "state.json").read_text())["mlflow_run_id"]
    (run_dir / "result.json").unlink()  # as if the job had been killed before its end
    client.update_run(run_id, status="RUNNING")
    for name in damaged:
        _cut_short(run_dir / "checkpoints" / name)
    again, _ = _train(tmp_path, prepared)
    assert again.returncode == 0, again.stderr[-3000:]
    err = again.stderr
    for name in damaged:
        assert f"checkpoint {run_dir / 'checkpoints' / name} is damaged (it cannot be read" in err
        assert len(list((run_dir / "checkpoints").glob(f"{name}.damaged-*"))) == 1
    assert expected in err
    assert "weights_only" not in err and "Traceback" not in err
    assert read_json(run_dir / "result.json")["test_acc"] >= 0
    now = json.loads((run_dir / "state.json").read_text())["mlflow_run_id"]
    assert client.get_run(now).info.status == "FINISHED"
    if "best.ckpt" not in damaged:  # resumed: the same run goes on
        assert now == run_id
    else:  # started again: a new run, and the old one is closed, saying why
        assert now != run_id and client.get_run(run_id).info.status == "KILLED"
        assert f"training started again as run {now}" in client.get_run(run_id).data.tags["error"]


@pytest.mark.parametrize("artifact", [
    "checkpoints/best.ckpt",
    # a training and a report each: in the slow run
    pytest.param("config.yaml", marks=pytest.mark.slow),
    pytest.param("confusion_matrix.csv", marks=pytest.mark.slow),
])  # fmt: skip
def test_a_damaged_artifact_costs_only_its_own_figures(tmp_path, prepared, artifact):
    proc, client = _train(tmp_path, prepared)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id = json.loads((tmp_path / "run" / "state.json").read_text())["mlflow_run_id"]
    path = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://"), artifact)
    assert path.is_file()
    path.write_bytes(b"\x00garbage" * 10)
    out = tmp_path / "report"
    result = build_report(f"sqlite:///{tmp_path / 'mlflow.db'}", "smoke", CONF_DIR, prepared, out)
    assert (out / "report.html").stat().st_size > 5_000 and result["html"]
    assert (out / "summary.csv").read_text().count("mlp_baseline") == 1
    # Every figure is there: drawn, or a placeholder that says why it is missing.
    assert len(list(out.glob("*.png"))) >= 5
