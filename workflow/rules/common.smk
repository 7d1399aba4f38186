# Shared by every rule: the study (from conf/study/), the tracking store, the file layout.
#
# Nothing absolute and nothing secret is a rule's parameter: params are rerun triggers (an absolute
# path would rerun every job after the project folder moves) and, like shell commands, they are
# printed and kept in .snakemake/metadata. Absolute paths go into shell commands quoted ({x:q}).
import json
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod
from snakemake.utils import validate

from cnnlab.study.config import check_accelerator, fingerprint
from cnnlab.errors import UserError
from cnnlab.training.gpu import set_jobs_per_gpu, visible_gpus
from cnnlab.data.download import SECRET_URL_VARIABLE, has_secrets, public_url
from cnnlab.data.preprocess import check_prepared
from cnnlab.report.registry import figures as report_figures
from cnnlab.study.studies import AUTO_STUDY, compose_config, load_study, resolve_auto_study
from cnnlab.tracking.uri import has_credentials, on_network_filesystem, store_uri

validate(config, "../schemas/config.schema.yaml")


def keep_out_of_records(key, public):
    """config[key] holds a secret: from here on config, and the command line Snakemake logs and prints,
    hold `public` instead (a `script:` job's temporary file embeds the config; the log's header shows
    sys.argv when the workflow starts)."""
    secret = str(config[key])
    config[key] = public
    sys.argv[:] = [a.replace(secret, public) for a in sys.argv]


# What a run under a cluster executor must not be given, each as the sentence that refuses it. The
# executor is known only once the workflow starts (workflow.local_exec is true while the Snakefile is
# read), so they are collected here and refused in `onstart`, before any job is submitted.
CLUSTER_REFUSALS = []
# Secrets in the two URLs: a tracking server's user and password, the data's user and password or a
# pre-signed URL's token. Snakemake hands a cluster job the command line's --config as typed (its
# spawned command, `scontrol show job`), so a cluster run refuses them; locally they are taken out
# here, once, and reach only the processes that need them, through the environment.
for key, secret_in, where in (
    (
        "tracking_uri",
        has_credentials(str(config["tracking_uri"])),
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)",
    ),
    (
        "data_url",
        has_secrets(str(config["data_url"])),
        "~/.netrc for a user and password, or download the archive once on this host and pass data_url=file:///<path>",
    ),
):
    if secret_in:
        CLUSTER_REFUSALS.append(
            f"{key} carries credentials or a token, which Snakemake would pass to every cluster job's command "
            f"line; give it without them and use {where}."
        )
if has_secrets(str(config["data_url"])):
    os.environ[SECRET_URL_VARIABLE] = str(config["data_url"])  # read by the download job alone
    keep_out_of_records("data_url", public_url(str(config["data_url"])))
if config["val_size"] >= config["train_records"]:
    raise WorkflowError(
        f"val_size ({config['val_size']}) must be smaller than train_records ({config['train_records']}); "
        "the validation images are taken from the training records."
    )
# The images a training job trains on and validates on, as the time estimate and the job order count them.
N_EVAL = config["val_size"]
N_TRAIN = config["train_records"] - N_EVAL

REPO = Path(workflow.basedir)
CONF_DIR = REPO / "conf"
# conf/ as a rule's parameter: relative to the working directory, so it survives a move.
CONF_DIR_PARAM = os.path.relpath(CONF_DIR)


# Every rule's software: the project's one environment file, relative to this folder as Snakemake
# resolves it. With --use-conda Snakemake builds it under .snakemake/conda/ from a copy, so the
# file cannot name this checkout; environment.post-deploy.sh installs it from CNNLAB_CHECKOUT.
ENVIRONMENT = "../../environment.yml"
os.environ.update(CNNLAB_CHECKOUT=str(REPO))
USES_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method


# Without --use-conda, shell commands run `python`: the interpreter Snakemake runs on comes first
# on PATH, so an un-activated virtual environment works too. Jobs on other machines (SLURM) get
# this PATH; with --use-conda the job's environment comes before it.
envvars:
    "PATH",


os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"


def count_local_gpus() -> int:
    """GPUs this machine lets jobs use (CUDA_VISIBLE_DEVICES's list when set, else the driver's count)."""
    return len(visible_gpus())


def workflow_flag(key):
    """A yes/no setting as a user types it on the command line (Snakemake passes `false` as a string)."""
    value = config[key]
    spelled = str(value).strip().lower()
    if isinstance(value, bool) or spelled in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        return value if isinstance(value, bool) else spelled in ("true", "1", "yes", "on")
    raise WorkflowError(f"{key}={value!r} is not true or false; write --config {key}=true or {key}=false.")


if config["study"] == AUTO_STUDY:
    config["study"] = resolve_auto_study(count_local_gpus)

try:
    STUDY = load_study(config["study"], CONF_DIR)
    # The studies whose runs this workflow may train: the study, and the tuning study that chooses
    # each tuned variant's value (tuning.study).
    STUDIES = {STUDY.name: STUDY}
    if STUDY.tuning_study:
        STUDIES[STUDY.tuning_study] = load_study(STUDY.tuning_study, CONF_DIR)
    # Compose every variant now, so a bad override stops the workflow before any job starts; its
    # fingerprint is a parameter of its training jobs, so an edit to conf/ re-runs exactly those.
    # (A value chosen by the tuning is not in it: the chosen values file is an input of those jobs.)
    CONFIGS = {
        (s.name, v): compose_config(study=s.name, variant=v, conf_dir=CONF_DIR)
        for s in STUDIES.values()
        for v in s.variants
    }
    FINGERPRINTS = {key: fingerprint(cfg) for key, cfg in CONFIGS.items()}
    # The report's figures, built-in and the study's own (report.modules): each one is an output.
    FIGURES = report_figures(STUDY)
except UserError as e:
    raise WorkflowError(f"{e} (study file conf/study/{config['study']}.yaml)") from None

# The store: MLFLOW_TRACKING_URI, else tracking_uri, else results/mlflow.db (relative: it moves with
# the folder). A user name and password inside the URI are moved here, once, into MLflow's own
# variables (MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD), so the URI a rule, job, log or
# run holds has none. Jobs read both from the environment they inherit.
try:
    TRACKING_URI = store_uri(config["tracking_uri"], "tracking_uri")
except UserError as e:
    raise WorkflowError(str(e)) from None
if has_credentials(str(config["tracking_uri"])):
    keep_out_of_records("tracking_uri", TRACKING_URI)
# Set for the jobs, not read: `envvars:` would demand it before the workflow starts.
os.environ.update(MLFLOW_TRACKING_URI=TRACKING_URI)
# Many cluster jobs writing one SQLite file on a network file system lose writes or lock up:
# a cluster run on one takes a tracking server (docs/cluster.md).
if TRACKING_URI.startswith("sqlite:///"):
    shared = on_network_filesystem(Path(TRACKING_URI.removeprefix("sqlite:///")).parent)
    if shared:
        CLUSTER_REFUSALS.append(
            f"The tracking store {TRACKING_URI} is a SQLite file on a {shared} file system, whose locking SQLite "
            "cannot rely on with many cluster jobs writing at once; start a tracking server (docs/cluster.md) and "
            "pass --config tracking_uri=http://<host>:5000."
        )


def refuse_what_a_cluster_must_not_get():
    """Under a cluster executor, stop at the first of CLUSTER_REFUSALS, before any job is submitted."""
    if CLUSTER_REFUSALS and not workflow.local_exec:
        raise WorkflowError(CLUSTER_REFUSALS[0])


# One thread per CPU training job, as many jobs as cores (docs/benchmarks.md, CPU settings).
TRAIN_THREADS = 1
# What a training job declares it holds (mem_mb): the data set as uint8 and as float32, the network,
# its activations and the optimizer's state, with room to spare.
TRAIN_MEM_MB = 4000

# Training jobs fork from a warm process that has imported torch, Lightning and MLflow once
# (cnnlab.launch.forkserver, which reads this from the environment the jobs inherit).
# CNNLAB_WARM_START=0 set by the user wins over the config.
WARM_START = workflow_flag("warm_start") and os.environ.get("CNNLAB_WARM_START", "1") != "0"
os.environ.update(CNNLAB_WARM_START="1" if WARM_START else "0")
if not WARM_START:
    print(
        "cnnlab: training jobs start cold (warm_start is off): each imports torch, Lightning and MLflow itself.",
        file=sys.stderr,
    )

# Locally, `gpu` counts GPU slots: jobs_per_gpu training jobs per GPU, each asking for one slot
# (gpu=1) and pinned to one GPU by the slot locks of cnnlab.training.gpu, which learn jobs_per_gpu from
# the environment local jobs inherit (set_jobs_per_gpu). A `gpu` limit on the command line wins.
# Under a cluster executor the scheduler hands out whole GPUs instead (the SLURM profile).
JOBS_PER_GPU = config["jobs_per_gpu"]
set_jobs_per_gpu(JOBS_PER_GPU)
if workflow.local_exec and "gpu" not in workflow.global_resources:
    LOCAL_GPUS = count_local_gpus()
    if LOCAL_GPUS > 0:
        workflow.register_resource("gpu", LOCAL_GPUS * JOBS_PER_GPU)
# Locally, the jobs' declared memory (mem_mb) is counted against what this machine has free, so
# `--cores all` on a large machine never starts more jobs than its memory holds (each CPU job keeps
# its own float32 copy of the data set). CNNLAB_AVAILABLE_MB stands in for the measured amount; a
# `--resources mem_mb=...` on the command line wins. While the Snakefile is read the executor is not
# known yet (local_exec is true even under SLURM); a cluster executor runs with --jobs (the profile's
# `jobs`), a local run with --cores alone: only the latter counts the submit host's memory.
if workflow.local_exec and workflow.nodes is None and "mem_mb" not in workflow.global_resources:
    import psutil

    available = int(os.environ.get("CNNLAB_AVAILABLE_MB") or psutil.virtual_memory().available // 2**20)
    workflow.register_resource("mem_mb", max(available, TRAIN_MEM_MB))  # one job at least, however little


# A run that asks for a GPU (or another accelerator) this machine lacks stops here, before any job.
# Under a cluster executor the jobs run elsewhere, on nodes the scheduler chooses.
if workflow.local_exec:
    try:
        gpus = count_local_gpus()
        for (study_name, variant), cfg in CONFIGS.items():
            check_accelerator(cfg, gpus)
    except UserError as e:
        raise WorkflowError(f"{e} (variant {variant} of conf/study/{study_name}.yaml)") from None

ARCHIVE = "resources/cifar-10-binary.tar.gz"
ARRAYS = "results/data/cifar10.npz"
STATS = "results/data/cifar10.json"

# A damaged prepared data set (cut short, overwritten) stops the workflow with the exact fix,
# before any job reads it.
if Path(ARRAYS).exists() and Path(STATS).exists():
    try:
        check_prepared(ARRAYS)
    except UserError as e:
        raise WorkflowError(str(e)) from None
RUN_DIR = "results/{study}/runs/{variant}/seed{seed}"
RUN_RESULT = f"{RUN_DIR}/result.json"


wildcard_constraints:
    study=r"[A-Za-z0-9_-]+",
    variant=r"[A-Za-z0-9_]+",
    seed=r"\d+",


TUNED_VALUES = "results/{study}/chosen.json"


def variant_fingerprint(wildcards):
    return FINGERPRINTS[(wildcards.study, wildcards.variant)]


def training_priority(wildcards):
    """A training job's work in GFLOPs (cnnlab.study.estimate.training_work) as its priority: among
    the jobs ready to run the longest starts first, so the study does not end on one long job
    running alone while the other cores wait."""
    from cnnlab.study.estimate import training_work

    cfg = CONFIGS.get((wildcards.study, wildcards.variant))
    return 0 if cfg is None else round(training_work(cfg, N_TRAIN, N_EVAL))


def study_results(wildcards):
    """Every training result of the study: one per (variant, seed)."""
    study = STUDIES[wildcards.study]
    return [RUN_RESULT.format(study=study.name, variant=v, seed=s) for v, s in study.jobs()]


def tuned_values(wildcards):
    """The values a study's tuning study chose, for the runs of the study it tunes (tuning.study)."""
    tuning = STUDIES[wildcards.study].tuning_study
    return [TUNED_VALUES.format(study=tuning)] if tuning else []


def runs_folders():
    """Every study's folder of run folders (results/<study>/runs)."""
    return [Path("results", name, "runs") for name in STUDIES]


def close_abandoned_runs():
    """Mark KILLED the MLflow runs of jobs that were killed outright (cnnlab.tracking.abandoned_runs)."""
    from cnnlab.tracking.abandoned_runs import close_abandoned_runs as close

    try:
        close(TRACKING_URI, runs_folders())
    except Exception as e:  # the store may be what failed: a warning, never a second error
        from cnnlab.tracking.store import first_line

        print(f"cnnlab: warning: could not close abandoned MLflow runs ({first_line(e)})", file=sys.stderr)


def follow_moved_project_folder():
    """A moved project folder: the SQLite store's artifact locations point into it again
    (cnnlab.tracking.relocation). Once, as the workflow starts; a dry run changes nothing."""
    from cnnlab.tracking.relocation import relocate_artifacts
    from cnnlab.tracking.store import sqlite_file

    db = sqlite_file(TRACKING_URI)
    if db is not None:
        relocate_artifacts(db)


def pending_training_jobs():
    """The training jobs this run will run, as (study, variant, seed): Snakemake's own list, so a
    job re-run for a changed config or a --forcerun counts, not only one whose result is missing."""
    return [
        (job.wildcards.study, job.wildcards.variant, int(job.wildcards.seed))
        for job in workflow.dag.needrun_jobs()
        if job.rule.name == "train_variant"
    ]


def start_warm_process():
    """Start the warm process the training jobs fork from (cnnlab.launch.forkserver) now, in the background,
    so the first jobs find it ready. Through shell() with the training rule's threads: the same
    environment as a training job's (Snakemake sets OMP_NUM_THREADS and the like from threads),
    hence the same warm process. It does nothing where the jobs would start cold."""
    shell(
        "OMP_NUM_THREADS={TRAIN_THREADS} python -m cnnlab.launch.forkserver --prestart > /dev/null 2>&1 &",
        threads=TRAIN_THREADS,
    )


def announce_training_jobs(pending):
    """Print the training jobs still to run, each family's precision and an estimate of their wall
    time (cnnlab.study.estimate); hand the measured bf16 speed-ups to the jobs (cnnlab.study.precision)."""
    from cnnlab.study.estimate import announce, bf16_speedups, write_estimate
    from cnnlab.study.precision import SPEEDUP_VARIABLE

    if pending:
        slots = workflow.global_resources["gpu"].value or 0 if "gpu" in workflow.global_resources else 0
        # Jobs sharing a GPU share its speed: the estimate counts whole GPUs (the measured rate is one job's).
        gpus = max(1, slots // JOBS_PER_GPU) if slots else 0
        result = announce(pending, CONF_DIR, gpus or workflow.cores, gpus, N_TRAIN, N_EVAL, configs=CONFIGS)
        write_estimate(f"results/{STUDY.name}/estimate.json", result, pending, gpus or workflow.cores)
        # Inherited by every job, not a param: a new measurement must not re-run finished jobs.
        os.environ[SPEEDUP_VARIABLE] = json.dumps(bf16_speedups(result))
