"""cnnlab: the MLP-versus-CNN study of a convolutional-networks course, as a reproducible pipeline."""

import os

__version__ = "0.1.0"

# MLflow's usage telemetry (on by default since MLflow 3.2) starts a thread at `import mlflow` that
# fetches a config over the network; when that fails (no internet, as on compute nodes) the thread
# deletes an environment variable, which can break any code iterating os.environ at that moment
# (seen: KeyError '_MLFLOW_TELEMETRY_SESSION_ID' in the credential scan of a training job).
# A user who wants the telemetry sets MLFLOW_DISABLE_TELEMETRY=false.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
