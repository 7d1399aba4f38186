"""What MLflow's own UI and API read from a training run: system tags, the data set input, system
metrics, and the best checkpoint as a logged model that loads, predicts and registers.

Real `cnnlab.training.train.train` runs (a tiny CNN with z-score inputs, batch norm and flip test-time
augmentation) on a tiny prepared data set, in a real SQLite store.
"""

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from mlflow import MlflowClient

from cnnlab.data.preprocess import load_arrays
from cnnlab.study.studies import compose_config
from cnnlab.training.train import train
from tests.helpers import tiny_prepared

VARIANT_OVERRIDES = [
    "model.channels=[8,16]", "model.hidden=[32]", "model.batch_norm=true", "trainer.max_epochs=3",
    "trainer.batch_size=32", "trainer.eval_batch_size=64", "trainer.test_flip_tta=true", "trainer.progress_bar=false",
    # A sampling interval well inside the run, which lasts seconds: MLflow's monitor logs one sample per
    # finished interval.
    "trainer.threads=1", "tracking.system_metrics_interval_s=0.1",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(tmp folder, store URI, config, result) of quick's cnn_zscore variant trained on tiny data."""
    tmp = tmp_path_factory.mktemp("mlflow-model")
    arrays = tiny_prepared(tmp / "data")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    overrides = [*VARIANT_OVERRIDES, f"data.arrays={arrays}", f"tracking.uri={uri}", f"run.dir={tmp / 'run'}"]
    cfg = compose_config(overrides, "quick", "cnn_zscore", 0)
    return tmp, uri, cfg, train(cfg)


def _run(trained):
    _, uri, _, result = trained
    return MlflowClient(uri).get_run(result["mlflow_run_id"])


def _model_id(trained) -> str:
    (output,) = _run(trained).outputs.model_outputs
    return output.model_id


def test_the_best_checkpoint_is_the_run_s_logged_model_in_the_study_s_experiment(trained):
    # MLflow's runs table finds a run's models by searching its experiment for their source run.
    _, uri, _, result = trained
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("quick")
    (model,) = client.search_logged_models(experiment_ids=[exp.experiment_id])
    assert model.model_id == _model_id(trained) and model.source_run_id == result["mlflow_run_id"]
    assert model.name == "model" and str(model.status) == "READY"
    assert model.tags["variant"] == "cnn_zscore" and model.params["data.normalize"] == "zscore"
    # The run's final metrics are the model's (not every metric of the best epoch's step).
    metrics = {m.key: m.value for m in model.metrics}
    assert metrics["test/acc"] == pytest.approx(result["test_acc"]) and "best_val_acc" in metrics
    assert not [k for k in metrics if k.startswith(("system/", "train/"))], sorted(metrics)


def test_the_experiment_opens_as_model_training(trained):
    _, uri, _, _ = trained
    exp = MlflowClient(uri).get_experiment_by_name("quick")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


def test_mlflow_system_tags_say_where_the_run_came_from_and_which_variant_it_is(trained):
    tags = _run(trained).data.tags
    assert tags["mlflow.source.name"] == "cnnlab.training.train" and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.git.commit"] == tags["git_commit"] and len(tags["git_commit"]) == 40
    note = tags["mlflow.note.content"]
    assert "cnn_zscore" in note and "quick" in note and "z-score normalization" in note and "cnn_baseline" in note
    # cnnlab's own tags stay
    assert tags["variant"] == "cnn_zscore" and tags["adds"] == "z-score normalization"
    assert tags["cnnlab.kind"] == "train"


def test_the_data_set_is_a_run_input_named_by_the_archive_checksum(trained):
    _, _, cfg, _ = trained
    stats = json.loads(Path(cfg.data.arrays).with_suffix(".json").read_text())
    (data_input,) = _run(trained).inputs.dataset_inputs
    dataset = data_input.dataset
    assert dataset.name == "cifar10" and dataset.digest == stats["archive_md5"][:8]
    assert json.loads(dataset.profile)["archive_md5"] == stats["archive_md5"]
    # tiny_prepared records no download URL: the source is then the prepared arrays
    assert stats["source_url"] == "" and json.loads(dataset.source) == {"uri": Path(cfg.data.arrays).resolve().as_uri()}
    assert json.loads(dataset.profile)["num_rows"] == stats["n_train"]
    assert {t.key: t.value for t in data_input.tags} == {"mlflow.data.context": "train"}


def _nvml_gpus() -> int:
    """The GPUs MLflow's monitor sees: NVML's count, 0 without nvidia-ml-py or a driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetCount()
    except Exception:
        return 0


def test_system_metrics_are_sampled_every_interval_while_training(trained):
    _, uri, _, result = trained
    metrics = _run(trained).data.metrics
    for name in ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"):
        assert name in metrics, sorted(metrics)
    history = MlflowClient(uri).get_metric_history(result["mlflow_run_id"], "system/cpu_utilization_percentage")
    assert sorted(m.step for m in history) == list(range(len(history))) and len(history) >= 2, history
    assert 0 <= min(m.value for m in history) and max(m.value for m in history) <= 100
    # MLflow's monitor watches every GPU NVML lists, whatever the job trains on (README, System metrics).
    assert any(name.startswith("system/gpu") for name in metrics) == (_nvml_gpus() > 0)


def test_the_logged_model_loads_without_pickle_and_reproduces_the_test_accuracy(trained, tmp_path):
    _, uri, cfg, result = trained
    mlflow.set_tracking_uri(uri)
    try:
        model_id = _model_id(trained)
        local = mlflow.artifacts.download_artifacts(f"models:/{model_id}", dst_path=str(tmp_path))
        model = mlflow.pyfunc.load_model(local)
    finally:
        mlflow.set_tracking_uri(None)
    files = {p.relative_to(local).as_posix() for p in Path(local).rglob("*") if p.is_file()}
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle"))], files
    assert "artifacts/weights.pt" in files and "code/cnnlab/models/cnn.py" in files
    # The weights are tensors only, readable with torch's restricted loader.
    weights = torch.load(f"{local}/artifacts/weights.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in weights.values())
    mlmodel = yaml.safe_load(open(f"{local}/MLmodel"))
    assert mlmodel["signature"]["inputs"] and json.loads(mlmodel["signature"]["inputs"])[0]["tensor-spec"] == {
        "dtype": "uint8", "shape": [-1, 3, 32, 32]}
    example = json.load(open(f"{local}/{mlmodel['saved_input_example_info']['artifact_path']}"))
    data = load_arrays(cfg.data.arrays)
    assert (np.asarray(example) == data["x_test"][:2]).all()  # six KiB: the first two test images
    predictions = model.predict(data["x_test"])
    accuracy = float((predictions["label"].to_numpy() == data["y_test"]).mean())
    assert accuracy == pytest.approx(result["test_acc"], abs=1e-6)
    classes = json.loads(Path(cfg.data.arrays).with_suffix(".json").read_text())["classes"]
    assert list(predictions.columns) == ["label", "class", *classes]
    assert (predictions["class"] == [classes[i] for i in predictions["label"]]).all()
    # Floats on [0, 1] give the same answers as the uint8 images they come from.
    as_float = model.unwrap_python_model().predict(None, data["x_test"].astype(np.float32) / 255.0)
    assert (as_float["label"] == predictions["label"]).all()


def test_the_logged_model_registers_in_the_sqlite_store_and_loads_by_version(trained):
    _, uri, cfg, _ = trained
    mlflow.set_tracking_uri(uri)
    try:
        version = mlflow.register_model(f"models:/{_model_id(trained)}", "cifar10-cnn")
        assert int(version.version) == 1 and version.status == "READY"
        model = mlflow.pyfunc.load_model("models:/cifar10-cnn/1")
    finally:
        mlflow.set_tracking_uri(None)
    images = load_arrays(cfg.data.arrays)["x_test"][:5]
    assert list(model.predict(images)["label"]) == list(model.unwrap_python_model().predict(None, images)["label"])
    assert MlflowClient(uri).get_registered_model("cifar10-cnn").latest_versions[0].source.startswith("models:/")


def test_a_job_run_again_after_its_model_was_logged_logs_nothing_twice(trained):
    # As after a job killed between logging its model and writing result.json: the same run resumes.
    _, uri, cfg, first = trained
    client = MlflowClient(uri)

    def cpu_steps():
        history = client.get_metric_history(first["mlflow_run_id"], "system/cpu_utilization_percentage")
        return sorted(m.step for m in history)

    steps_before = cpu_steps()
    again = train(cfg)
    assert again["mlflow_run_id"] == first["mlflow_run_id"] and again["test_acc"] == first["test_acc"]
    run = client.get_run(first["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert len(run.outputs.model_outputs) == 1 and len(run.inputs.dataset_inputs) == 1
    steps = cpu_steps()
    assert len(steps) == len(set(steps)) and steps[: len(steps_before)] == steps_before
