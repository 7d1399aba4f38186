# The MLflow database and the study's experiment are created here, once, before any training job:
# parallel jobs then never race to create tables or the experiment. The study's analysis plan is
# fixed here too (cnnlab.study.plan): the report and the record compare the study file with it.
rule init_tracking:
    input:
        stats=rules.prepare_data.output.stats,
    output:
        info="results/{study}/tracking.json",
        plan="results/{study}/plan.json",
    log:
        "logs/{study}/init_tracking.log",
    benchmark:
        "benchmarks/{study}/init_tracking.tsv"
    conda:
        ENVIRONMENT
    params:
        store=TRACKING_URI,  # the job reads it from the environment (MLFLOW_TRACKING_URI)
        artifact_root="results/mlartifacts/{study}",
        conf_dir=CONF_DIR_PARAM,
    script:
        "../scripts/init_tracking.py"
