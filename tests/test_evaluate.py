"""`cnnlab-eval`: a finished run's test numbers, confusion matrix and shift/scale accuracy, without training."""

import json

import pytest
from mlflow import MlflowClient

from cnnlab.report import evaluate
from cnnlab.report.sensitivity import SCALES, SHIFTS
from cnnlab.study.studies import compose_config
from cnnlab.training.train import train
from tests.helpers import PYTHON, read_json, run, tiny_prepared

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two real runs on tiny data: an MLP on [0, 1] pixels, and a z-scored CNN tested on mirror-averaged logits."""
    tmp = tmp_path_factory.mktemp("eval")
    arrays = tiny_prepared(tmp / "data")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    common = ["trainer.max_epochs=2", "trainer.batch_size=32", "trainer.eval_batch_size=64",
              "trainer.progress_bar=false", "trainer.threads=1", f"data.arrays={arrays}", f"tracking.uri={uri}",
              "optimizer=adam"]
    runs = {}
    for name, overrides in {
        "mlp": ["model=mlp", "model.hidden=[32]"],
        "cnn": ["model=cnn", "model.channels=[8,16]", "model.hidden=[32]", "data=zscore", "trainer.test_flip_tta=true"],
    }.items():
        cfg = compose_config([*common, *overrides, f"run.dir={tmp / name}"])
        runs[name] = (tmp / name, train(cfg))
    return tmp, uri, runs


def eval_cmd(*args: str) -> list[str]:
    return [PYTHON, "-m", "cnnlab.report.evaluate", *args]


def logged_confusion(run_dir) -> list[list[int]]:
    lines = (run_dir / "artifacts" / "confusion_matrix.csv").read_text().splitlines()[1:]
    return [[int(v) for v in line.split(",")[1:]] for line in lines]


def test_a_run_folder_evaluates_to_the_accuracy_training_logged(trained):
    tmp, uri, runs = trained
    run_dir, result = runs["mlp"]
    proc = run(eval_cmd(str(run_dir), "--json", str(tmp / "mlp.json"), "--shift-images", "40"), cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ev = read_json(tmp / "mlp.json")
    assert ev["test_images"] == 100
    assert ev["test_acc"] == pytest.approx(result["test_acc"], abs=1e-6)
    assert ev["test_loss"] == pytest.approx(result["test_loss"], rel=1e-5)
    assert ev["logged_test_acc"] == result["test_acc"] and ev["mlflow_run_id"] == result["mlflow_run_id"]
    assert ev["confusion_matrix"] == logged_confusion(run_dir)
    assert f"test accuracy  {result['test_acc']:.4f}" in proc.stdout and "confusion matrix" in proc.stdout
    # The report's shifts (three padding modes) and rescalings, on the first 40 test images
    assert ev["sensitivity_images"] == 40
    assert set(ev["shift_acc"]) == {"zeros", "replicate", "circular"}
    assert all(list(map(int, accs)) == list(SHIFTS) for accs in ev["shift_acc"].values())
    # Zoomed out with each padding mode, in by cropping; each mode's line passes through 1x.
    assert set(ev["scale_acc"]) == {"zeros", "replicate", "circular", "crop"}
    assert [float(f) for f in ev["scale_acc"]["crop"]] == pytest.approx([float(s) for s in SCALES if s >= 1])
    assert [float(f) for f in ev["scale_acc"]["zeros"]] == pytest.approx([float(s) for s in SCALES if s <= 1])
    for accs in ev["shift_acc"].values():  # unshifted: the first 40 images' accuracy, the same in every mode
        assert accs["0"] == ev["shift_acc"]["zeros"]["0"] == ev["scale_acc"]["crop"]["1.0"]


def test_an_mlflow_run_id_evaluates_to_the_logged_accuracy(trained):
    tmp, uri, runs = trained
    run_dir, result = runs["cnn"]
    proc = run(eval_cmd(result["mlflow_run_id"], "--uri", uri, "--shift-images", "0", "--json", "-"), cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ev = json.loads(proc.stdout)
    logged = MlflowClient(uri).get_run(result["mlflow_run_id"]).data.metrics
    assert ev["test_acc"] == pytest.approx(logged["test/acc"], abs=1e-6)
    assert ev["test_loss"] == pytest.approx(logged["test/loss"], rel=1e-5)
    assert ev["confusion_matrix"] == logged_confusion(run_dir)
    assert ev["run"] == f"MLflow run {result['mlflow_run_id']}" and "shift_acc" not in ev


def test_something_that_is_no_finished_run_is_one_sentence(trained, tmp_path, capsys):
    tmp, uri, _ = trained
    for args, fragment in (
        ([str(tmp_path)], "is not the folder of a finished run"),
        (["results/nope"], "is neither a run folder nor an MLflow run id"),
        (["0" * 32, "--uri", uri], f"has no run {'0' * 32}"),
    ):
        assert evaluate.main(args) == 2
        err = capsys.readouterr().err
        assert fragment in err and err.startswith("cnnlab-eval: error: ") and err.count("\n") == 1, err
