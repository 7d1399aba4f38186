#!/usr/bin/env bash
# Snakemake (--use-conda) runs this inside the environment it has just built from environment.yml,
# from a copy under .snakemake/conda/: the checkout's path comes from the workflow (common.smk).
# Editable, so jobs run the code as it is in the checkout, not as it was when the environment was built.
set -euo pipefail
python -m pip install --no-deps --editable "${CNNLAB_CHECKOUT:?set by the workflow (workflow/rules/common.smk)}"
