"""One training run: `cnnlab-train`, the Lightning module and Trainer, the run folder, the run's
life in MLflow (opened, finished, failed), GPU slots.

Imports tracking, study, models, optim, data and the shared modules; never report or launch.
"""
