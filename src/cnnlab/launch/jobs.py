"""How a workflow step runs: its log file, and a user's mistake as one line instead of a traceback.

Workflow scripts are thin adapters: `run_step(snakemake, fn)` calls one package function with
Snakemake's job object. This module never imports Snakemake itself.
"""

from __future__ import annotations

import logging
import sys
import traceback

from cnnlab.errors import UserError, storage_error_message


def run_step(job, fn) -> None:
    """Run fn(job) with logging sent to the job's log file; exit 1 with one sentence on a UserError."""
    handlers = [logging.StreamHandler(sys.stderr)]
    if len(job.log):
        handlers.append(logging.FileHandler(str(job.log[0]), mode="w"))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True
    )
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:
        fn(job)
    except Exception as e:
        message = str(e) if isinstance(e, UserError) else storage_error_message(e)
        if message is None:
            traceback.print_exception(e, file=sys.stderr)
            sys.exit(1)
        logging.getLogger("cnnlab").error("%s", message)
        print(f"cnnlab: error: {message}", file=sys.stderr)
        sys.exit(1)
