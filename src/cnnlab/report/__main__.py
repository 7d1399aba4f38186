"""`python -m cnnlab.report --study NAME --conf-dir DIR --arrays PATH --out DIR [--uri URI]`.

Without --uri the store is MLFLOW_TRACKING_URI's, else results/mlflow.db (a URI with a password is
best passed in the environment: a command line is visible to every user of the machine).
"""

from __future__ import annotations

import argparse
import logging
import sys

from cnnlab.errors import UserError
from cnnlab.report.build import build_report
from cnnlab.study.studies import CONF_DIR
from cnnlab.tracking.redaction import redact_logs, redact_text
from cnnlab.tracking.store import resolve_uri


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cnnlab.report", description=build_report.__doc__)
    parser.add_argument("--uri", default="", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else "
                        "sqlite:///results/mlflow.db)")
    parser.add_argument("--study", required=True, help="study name (conf/study/<name>.yaml; the MLflow experiment)")
    parser.add_argument("--conf-dir", default=str(CONF_DIR), help="the Hydra conf/ folder holding study/")
    parser.add_argument("--arrays", required=True, help="the preprocessed .npz (its .json statistics next to it)")
    parser.add_argument("--out", required=True, help="folder for report.html, summary.csv/.md and the figures")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    redact_logs()
    try:
        result = build_report(resolve_uri(args.uri), args.study, args.conf_dir, args.arrays, args.out)
    except UserError as e:
        print(f"cnnlab-report: error: {redact_text(str(e))}", file=sys.stderr)
        return 1
    print(result["html"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
