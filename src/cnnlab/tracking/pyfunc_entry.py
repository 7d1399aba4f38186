"""What MLflow runs to load a cnnlab model ("models from code": nothing is unpickled); see mlflow_model."""

import mlflow

from cnnlab.tracking.model import CifarClassifier

mlflow.models.set_model(CifarClassifier())
