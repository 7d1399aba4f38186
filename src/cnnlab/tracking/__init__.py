"""The MLflow store beneath every run, one module per concern: which store and its credentials
(uri), connecting, retrying and closing runs (store), the per-epoch Lightning callback (callback),
a study's experiment and data-preparation run (study_setup), logged models (model), abandoned runs
(abandoned_runs), a moved project folder (relocation).

Imports study, models, data and the shared modules; never training, report or launch.
"""
