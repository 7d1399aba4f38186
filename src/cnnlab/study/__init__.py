"""Studies and one run's config: study files, their variants as Hydra configs, the typed schema,
the learning rates a sweep chose, the time a study will take.

Imports models, optim, data and the shared modules; never training, tracking, report or launch.
"""
