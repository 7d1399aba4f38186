"""A run's best checkpoint as an MLflow model: `mlflow.pyfunc.load_model("models:/<id>")`.

Logged as MLflow's "models from code": the model holds `pyfunc_entry.py` (three lines that build
`CifarClassifier`), a copy of the cnnlab package that built the network, the network's weights
as a plain state_dict read with `torch.load(weights_only=True)`, and in MLmodel the config it was
built from. Loading it runs that code and reads tensors; it never unpickles objects.

The model takes images in the layout of the prepared arrays, (N, 3, 32, 32) uint8 (0-255), the
type in its signature; called directly (`.unwrap_python_model().predict`), it also takes float
images on [0, 1]. It applies the run's normalization (and flip test-time augmentation when the
run tested with it) and returns, per image, the predicted label, its class name and the
probability of each class.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from mlflow.entities import LoggedModelOutput
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec
from omegaconf import OmegaConf

import cnnlab
from cnnlab.models import build_network

log = logging.getLogger(__name__)

MODEL_NAME = "model"  # the logged model's name: the run's Models column and models:/ URIs show it
ENTRY = Path(__file__).with_name("pyfunc_entry.py")
EXAMPLE_IMAGES = 2  # test images stored as the input example: 6 KiB as uint8
PREDICT_BATCH = 1000  # images per forward pass: bounds memory for large inputs


class CifarClassifier(mlflow.pyfunc.PythonModel):
    """Rebuilds the run's network from its config and weights; predicts classes of uint8 or float images."""

    def load_context(self, context) -> None:
        spec = context.model_config
        self.classes = list(spec["classes"])
        self.net = build_network(OmegaConf.create(spec["model"]), num_classes=len(self.classes))
        weights = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        self.net.load_state_dict(weights)
        self.net.eval()
        self.mean = torch.tensor(spec["mean"])[None, :, None, None] if spec.get("mean") else None
        self.std = torch.tensor(spec["std"])[None, :, None, None] if spec.get("std") else None
        self.flip = bool(spec.get("test_flip_tta", False))

    def _scaled(self, images: np.ndarray) -> torch.Tensor:
        """(N, 3, H, W) uint8 0-255 or float 0-1 -> float32, normalized as the run's data were."""
        x = torch.as_tensor(images)
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        elif x.is_floating_point():
            x = x.float()
        else:
            raise ValueError(f"images must be uint8 (0-255) or float (0-1), not {x.dtype}")
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"images must have shape (N, 3, H, W), not {tuple(x.shape)}")
        return (x - self.mean) / self.std if self.mean is not None else x

    @torch.inference_mode()
    def predict(self, context, model_input: np.ndarray, params=None) -> pd.DataFrame:
        probabilities = []
        for i in range(0, len(model_input), PREDICT_BATCH):
            x = self._scaled(np.asarray(model_input[i : i + PREDICT_BATCH]))
            logits = self.net(x)
            if self.flip:  # as the run's test: the mean logits of each image and its mirror
                logits = (logits + self.net(x.flip(3))) / 2
            probabilities.append(logits.softmax(1).double())
        p = torch.cat(probabilities).numpy() if probabilities else np.zeros((0, len(self.classes)))
        label = p.argmax(1)
        out = pd.DataFrame({"label": label.astype(np.int64), "class": [self.classes[i] for i in label]})
        return pd.concat([out, pd.DataFrame(p, columns=self.classes)], axis=1)


def signature(classes: list[str], image_shape: tuple[int, ...]) -> ModelSignature:
    inputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, *image_shape))])
    outputs = Schema([ColSpec("long", "label"), ColSpec("string", "class"), *(ColSpec("double", c) for c in classes)])
    return ModelSignature(inputs=inputs, outputs=outputs)


def model_spec(cfg, stats: dict) -> dict:
    """What CifarClassifier needs besides the weights (stored in MLmodel as the model config)."""
    zscore = cfg.data.normalize == "zscore"
    return {
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "classes": list(stats["classes"]),
        "mean": list(stats["mean"]) if zscore else None,
        "std": list(stats["std"]) if zscore else None,
        "test_flip_tta": bool(cfg.trainer.test_flip_tta),
    }


def requirements() -> list[str]:
    """The model's pip requirements, pinned to this environment (saves MLflow a slow inference of them)."""
    from importlib.metadata import version

    pins = [f"{name}=={version(name)}" for name in ("mlflow", "numpy", "pandas", "omegaconf", "hydra-core")]
    return [f"torch=={torch.__version__.split('+')[0]}", *pins]


def warm_up() -> threading.Thread:
    """Start, in a background thread, the one-time work MLflow does when the first model is logged.

    Logging checks the model's pip requirements against the installed packages, and the first
    check scans every installed distribution (about 1 s on 2 cores with ~160 packages). Done while
    the job trains, it does not delay the job's end. An MLflow without the function just skips it.
    """

    def scan() -> None:
        try:
            from mlflow.utils.requirements_utils import _init_packages_to_modules_map

            _init_packages_to_modules_map()
        except Exception as e:  # only a warm-up: logging does the scan itself if it must
            log.debug("MLflow's package scan was not warmed up: %s", e)

    thread = threading.Thread(target=scan, name="mlflow-model-warm-up", daemon=True)
    thread.start()
    return thread


def log_best_model(client, run, checkpoint: Path, cfg, stats: dict, example: np.ndarray):
    """Log the checkpoint's network as the MLflow model of `run` (an mlflow Run); return MLflow's ModelInfo.

    The model is created in the run's experiment with the run's parameters and source tags (MLflow's
    own log_model, given no active run, would file it under the Default experiment) and becomes the
    run's output at the checkpoint's epoch. MLflow is not given the run itself: it would link every
    metric logged at that step to the model, system metrics (whose steps count samples) included;
    the caller links the run's final metrics instead. The tracking URI must be set
    (`mlflow.set_tracking_uri`): MLflow's model logging reads it.
    """
    # Logging loads the model back from a local copy to check its input example: no progress bar
    # for that "download" in the job's log.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    prefix = "net."  # the LightningModule holds the network as .net
    state = {k.removeprefix(prefix): v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    source_tags = {k: v for k, v in run.data.tags.items() if k.startswith("mlflow.source.")}
    model = client.create_logged_model(
        run.info.experiment_id,
        name=MODEL_NAME,
        source_run_id=run.info.run_id,
        params=run.data.params,
        tags={**source_tags, "study": cfg.run.study, "variant": cfg.run.variant, "seed": str(cfg.seed)},
    )
    with tempfile.TemporaryDirectory(prefix="cnnlab-model-") as tmp:
        weights = Path(tmp) / "weights.pt"
        torch.save(state, weights)  # tensors only: loads with weights_only=True
        info = mlflow.models.Model.log(
            artifact_path=None,
            name=MODEL_NAME,
            flavor=mlflow.pyfunc,
            model_id=model.model_id,
            python_model=str(ENTRY),
            artifacts={"weights": str(weights)},
            model_config=model_spec(cfg, stats),
            code_paths=[str(Path(cnnlab.__file__).parent)],
            signature=signature(list(stats["classes"]), tuple(example.shape[1:])),
            input_example=example,
            pip_requirements=requirements(),
        )
    output = LoggedModelOutput(model.model_id, step=int(ckpt.get("epoch", 0)))
    client.log_outputs(run.info.run_id, models=[output])
    return info
