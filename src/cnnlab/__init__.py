"""cnnlab: the MLP-versus-CNN study of a convolutional-networks course, as a reproducible pipeline."""

import os

__version__ = "0.1.0"

# MLflow's usage telemetry is on by default and sends events to MLflow's servers from a background
# thread: training jobs on clusters without internet would try in vain, and no study data should
# leave the machine unasked. MLFLOW_DISABLE_TELEMETRY=false in the environment turns it back on.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
