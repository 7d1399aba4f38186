# Shared by every rule: the study (from conf/study/), the tracking store, the file layout.
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from cnnlab.config import fingerprint
from cnnlab.errors import UserError
from cnnlab.report.registry import figures as report_figures
from cnnlab.study import compose_config, load_study
from cnnlab.tracking import resolve_uri


validate(config, "../schemas/config.schema.yaml")

REPO = Path(workflow.basedir)
CONF_DIR = REPO / "conf"
# Every job runs in the environment Snakemake runs in. This file imports cnnlab to read the
# studies, so the workflow cannot even start outside that environment (environment.yml, or the
# venv of the README). Hence no conda environment or container per rule, the one finding that
# `snakemake --lint` reports and .ci/snakemake_lint.py allows. A per-rule environment would be a
# second copy of the same packages, and an environment file cannot install this checkout
# (Snakemake copies it under .snakemake/conda/ first); a named environment needs conda even to
# record each job's metadata.
#
# Shell commands run `python`: the interpreter Snakemake runs on comes first on PATH, so an
# un-activated virtual environment works too. Jobs on other machines (SLURM) get this PATH.
envvars:
    "PATH",


os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"

try:
    STUDY = load_study(config["study"], CONF_DIR)
    # Compose every variant now, so a bad override stops the workflow before any job starts; its
    # fingerprint is a parameter of its training jobs, so an edit to conf/ re-runs exactly those.
    FINGERPRINTS = {
        v: fingerprint(compose_config(study=STUDY.name, variant=v, conf_dir=CONF_DIR)) for v in STUDY.variants
    }
    # The report's figures, built-in and the study's own (report.modules): each one is an output.
    FIGURES = report_figures(STUDY)
except UserError as e:
    raise WorkflowError(f"{e} (study file conf/study/{config['study']}.yaml)") from None

TRACKING_URI = resolve_uri(config["tracking_uri"], "results/mlflow.db")


def count_local_gpus() -> int:
    """GPUs on this machine, from nvidia-smi (importing torch here would slow every invocation)."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return 0
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
    return sum(line.startswith("GPU ") for line in out.splitlines())


# One training job per GPU when running locally and the command line set no `gpu` limit.
# Under a cluster executor the scheduler hands out GPUs instead.
if workflow.local_exec and "gpu" not in workflow.global_resources:
    LOCAL_GPUS = count_local_gpus()
    if LOCAL_GPUS > 0:
        workflow.register_resource("gpu", LOCAL_GPUS)

ARCHIVE = "resources/cifar-10-binary.tar.gz"
ARRAYS = "results/data/cifar10.npz"
STATS = "results/data/cifar10.json"
RUN_DIR = "results/{study}/runs/{variant}/seed{seed}"
RUN_RESULT = f"{RUN_DIR}/result.json"


wildcard_constraints:
    study=r"[A-Za-z0-9_-]+",
    variant=r"[A-Za-z0-9_]+",
    seed=r"\d+",


def variant_fingerprint(wildcards):
    return FINGERPRINTS[wildcards.variant]


def study_results(wildcards):
    """Every training result of the study: one per (variant, seed)."""
    return expand(
        RUN_RESULT,
        study=wildcards.study,
        variant=list(STUDY.variants),
        seed=STUDY.seeds,
    )
