# The comparison report, from the MLflow store and the test set alone. Its figures come from the
# report's registry (cnnlab.report.registry): the same list the script draws, so each one is an
# output here, marked for `snakemake --report report.zip` (a file each: a marked directory breaks
# --report, #3748).
REPORT_DIR = "results/{study}/report"
REPORT_FIGURES = {
    fig.name: report(
        f"{REPORT_DIR}/{fig.name}.png",
        caption="../report/figure.rst",
        category=fig.category,
        labels={"figure": fig.title, "shows": fig.caption},
    )
    for fig in FIGURES
}


rule build_report:
    input:
        results=study_results,
        tracking=rules.init_tracking.output.info,
        plan=rules.init_tracking.output.plan,
        arrays=rules.prepare_data.output.arrays,
        stats=rules.prepare_data.output.stats,
    output:
        **REPORT_FIGURES,
        html=report(f"{REPORT_DIR}/report.html", caption="../report/report.rst", category="Report"),
        summary=report(f"{REPORT_DIR}/summary.csv", caption="../report/summary.rst", category="Report"),
        markdown=f"{REPORT_DIR}/summary.md",
        claims=report(f"{REPORT_DIR}/claims.csv", caption="../report/claims.rst", category="Report"),
    log:
        "logs/{study}/build_report.log",
    benchmark:
        "benchmarks/{study}/build_report.tsv"
    conda:
        ENVIRONMENT
    # It runs alone, after every training job: its network evaluations (the shift and scale
    # tests) use two of the cores the training jobs have left (Snakemake caps this at --cores).
    threads: 2
    params:
        store=TRACKING_URI,  # the job reads it from the environment (MLFLOW_TRACKING_URI)
        conf_dir=CONF_DIR_PARAM,
    script:
        "../scripts/build_report.py"
