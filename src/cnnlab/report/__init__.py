"""The comparison report: `python -m cnnlab.report --uri URI --study NAME --conf-dir DIR --arrays PATH --out DIR`.

Built from the MLflow store and the preprocessed test set alone, so it can also run from the
workflow's error hook when some training jobs failed: those variants show as failed or missing.
Its sections and figures come from one registry (`cnnlab.report.registry`).
"""

__all__ = ["build_report", "load"]


def __getattr__(name):
    # The builder is imported on first use: the Snakefile imports the registry from this package
    # at every start, and the builder's imports (MLflow, matplotlib) would slow that start.
    if name == "build_report":
        from cnnlab.report.build import build_report

        return build_report
    if name == "load":  # a finished study's summary, claims and runs (cnnlab.report.finished)
        from cnnlab.report.finished import load

        return load
    raise AttributeError(f"module 'cnnlab.report' has no attribute {name!r}")
