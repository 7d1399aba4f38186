"""The comparison report: `python -m cnnlab.report --uri URI --study NAME --conf-dir DIR --arrays PATH --out DIR`.

Built from the MLflow store and the preprocessed test set alone, so it can also run from the
workflow's error hook when some training jobs failed: those variants show as failed or missing.
Its sections and figures come from one registry (`cnnlab.report.registry`).
"""

from cnnlab.report.build import build_report

__all__ = ["build_report"]
