"""The MLflow store beneath every run: connect, retry, the Lightning callback, logged models,
system metrics, abandoned runs, a moved project folder.

Imports study, models, data and the shared modules; never training, report or launch.
"""
