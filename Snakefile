# cnnlab: the MLP-versus-CNN study on CIFAR-10, from download to comparison report.
#
#   snakemake --cores all                                  # the study in workflow/config.yaml
#   snakemake --cores all --config study=quick             # another study from conf/study/
#   snakemake --cores all --config data_url=file:///path/cifar-10-binary.tar.gz data_md5=...
#
# What a study runs lives in conf/study/<name>.yaml; how one run trains lives in conf/ (Hydra).

from pathlib import Path


configfile: Path(workflow.basedir) / "workflow" / "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/tracking.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/tuning.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        rules.build_report.output.html.format(study=STUDY.name),
        rules.build_report.output.summary.format(study=STUDY.name),
        # A tuning study's point: the values it chooses.
        [TUNED_VALUES.format(study=STUDY.name)] if STUDY.is_sweep else [],


onstart:
    # Before any job: a cluster run given what it must not be (common.smk) stops; the store follows
    # a moved project folder; runs left RUNNING by a workflow that was killed outright are closed; the
    # warm process the training jobs fork from starts (under --use-conda the first job starts it, in
    # the jobs' interpreter); then how many training jobs, and for about how long on this machine.
    refuse_what_a_cluster_must_not_get()
    follow_moved_project_folder()
    close_abandoned_runs()
    if workflow.local_exec:
        pending = pending_training_jobs()
        if pending and WARM_START and not USES_CONDA:
            start_warm_process()
        announce_training_jobs(pending)


onerror:
    # Every job has ended: a run whose job was killed outright is marked KILLED. With --keep-going
    # every job that could run has run by now: build the report from what MLflow holds, so the
    # failed variants show as failed. Skipped when training never started. The report reads the
    # store's URI from the environment (MLFLOW_TRACKING_URI, set in common.smk).
    close_abandoned_runs()
    if Path(ARRAYS).exists() and Path(f"results/{STUDY.name}/tracking.json").exists():
        shell(
            "python -m cnnlab.report --study {STUDY.name}"
            " --conf-dir {CONF_DIR:q} --arrays {ARRAYS} --out results/{STUDY.name}/report"
            " > logs/{STUDY.name}/build_report_after_error.log 2>&1"
            " || echo 'cnnlab: the report after the error could not be built; see logs/{STUDY.name}/build_report_after_error.log'"
        )
