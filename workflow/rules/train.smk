# One job per (variant, seed). The job resumes from its last checkpoint if it was interrupted,
# so the run folder is not an output: Snakemake must not delete it when a job fails.
rule train_variant:
    input:
        arrays=rules.prepare_data.output.arrays,
        stats=rules.prepare_data.output.stats,
        tracking=rules.init_tracking.output.info,
        tuned=tuned_values,
    output:
        result=RUN_RESULT,
    log:
        "logs/{study}/train/{variant}-seed{seed}.log",
    benchmark:
        "benchmarks/{study}/train/{variant}-seed{seed}.tsv"
    # The longest jobs start first (training_priority, common.smk).
    priority: training_priority
    conda:
        ENVIRONMENT
    threads: TRAIN_THREADS
    resources:
        gpu=1,
        mem_mb=TRAIN_MEM_MB,
        runtime=120,
    params:
        run_dir=RUN_DIR,
        conf_dir=CONF_DIR_PARAM,
        config_fingerprint=variant_fingerprint,
    # The tracking store comes from the environment (MLFLOW_TRACKING_URI, common.smk). Every path
    # here is relative; all but conf/ are made of safe names (wildcard_constraints).
    shell:
        "OMP_NUM_THREADS={threads} python -m cnnlab.launch.forkserver --config-dir {params.conf_dir:q}"
        " study={wildcards.study} variant={wildcards.variant} seed={wildcards.seed}"
        " run.dir={params.run_dir} data.arrays={input.arrays}"
        " run.tuned='{input.tuned}'"
        " trainer.threads={threads} trainer.progress_bar=false"
        " > {log} 2>&1"
