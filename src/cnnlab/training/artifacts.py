"""The files a finished run leaves in its folder: the test confusion matrix (CSV, PNG) and its
first-layer filters (PNG). The MLflow run logs them as artifacts."""

from __future__ import annotations

import numpy as np
from torch import nn

from cnnlab import figures
from cnnlab.atomic import write_text
from cnnlab.models import Network
from cnnlab.training.rundir import RunDir


def confusion_csv(cm: np.ndarray, classes: list[str]) -> str:
    header = "true\\predicted," + ",".join(classes)
    rows = [f"{classes[i]}," + ",".join(str(int(v)) for v in cm[i]) for i in range(len(classes))]
    return "\n".join([header, *rows]) + "\n"


def first_layer_title(net: Network, label: str) -> str:
    layer = net.first_layer()
    kind = "templates (32x32x3)" if isinstance(layer, nn.Linear) else "kernels"
    return f"{label}: first-layer {kind}"


def write_run_artifacts(run_dir: RunDir, net: Network, cm: np.ndarray, classes: list[str], label: str,
                        test_acc: float) -> None:
    run_dir.artifacts.mkdir(exist_ok=True)
    write_text(run_dir.artifacts / "confusion_matrix.csv", confusion_csv(cm, classes))
    title = f"{label}: test acc {test_acc:.3f}"
    figures.save(figures.confusion_figure(cm, classes, title), run_dir.artifacts / "confusion_matrix.png")
    filters = figures.filters_figure(net.first_layer_images(), first_layer_title(net, label))
    figures.save(filters, run_dir.artifacts / "first_layer_filters.png")
