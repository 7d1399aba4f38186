# The MLflow database and the study's experiment are created here, once, before any training job:
# parallel jobs then never race to create tables or the experiment.
rule init_tracking:
    input:
        stats=rules.prepare_data.output.stats,
    output:
        info="results/{study}/tracking.json",
    log:
        "logs/{study}/init_tracking.log",
    conda:
        ENVIRONMENT
    params:
        store=TRACKING_URI,  # the job reads it from the environment (MLFLOW_TRACKING_URI)
        artifact_root="results/mlartifacts/{study}",
    script:
        "../scripts/init_tracking.py"
