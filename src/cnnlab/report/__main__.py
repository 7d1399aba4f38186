"""`python -m cnnlab.report --study NAME --conf-dir DIR --arrays PATH --out DIR [--uri URI]`.

The store is MLFLOW_TRACKING_URI's, else --uri's, else results/mlflow.db. A server's user name and
password are best set in MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD: a command line is
visible to every user of the machine (one inside the URI is moved there as the command starts).
"""

from __future__ import annotations

import argparse
import logging
import sys

from cnnlab.errors import UserError
from cnnlab.report.build import build_report
from cnnlab.study.studies import CONF_DIR
from cnnlab.tracking.uri import store_uri


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
    try:
        # Where the command starts, once: a URI's credentials go into MLflow's variables.
        result = build_report(store_uri(args.uri, "--uri"), args.study, args.conf_dir, args.arrays, args.out)
    except UserError as e:
        print(f"cnnlab-report: error: {e}", file=sys.stderr)
        return 1
    print(result["html"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
