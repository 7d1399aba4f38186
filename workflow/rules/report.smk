# The comparison report, from the MLflow store and the test set alone. The figures are marked for
# `snakemake --report report.zip`; each is a file (a marked directory breaks --report, #3748).
REPORT_DIR = "results/{study}/report"


rule build_report:
    input:
        results=study_results,
        tracking=rules.init_tracking.output.info,
        arrays=rules.prepare_data.output.arrays,
        stats=rules.prepare_data.output.stats,
    output:
        html=report(REPORT_DIR + "/report.html", caption="../report/report.rst", category="Report"),
        summary=report(REPORT_DIR + "/summary.csv", caption="../report/summary.rst", category="Report"),
        markdown=REPORT_DIR + "/summary.md",
        ablation=report(REPORT_DIR + "/ablation.png", caption="../report/ablation.rst", category="Comparison"),
        learning_curves=report(REPORT_DIR + "/learning_curves.png", caption="../report/learning_curves.rst", category="Comparison"),
        params_vs_accuracy=report(REPORT_DIR + "/params_vs_accuracy.png", caption="../report/params_vs_accuracy.rst", category="Comparison"),
        sensitivity=report(REPORT_DIR + "/sensitivity.png", caption="../report/sensitivity.rst", category="Comparison"),
        confusion=report(REPORT_DIR + "/confusion.png", caption="../report/confusion.rst", category="Best networks"),
        filters=report(REPORT_DIR + "/filters.png", caption="../report/filters.rst", category="Best networks"),
        activations=report(REPORT_DIR + "/activations.png", caption="../report/activations.rst", category="Best networks"),
        convolutions=report(REPORT_DIR + "/convolutions.png", caption="../report/convolutions.rst", category="Filters and convolutions"),
    params:
        uri=TRACKING_URI,
        conf_dir=CONF_DIR,
    log:
        "logs/{study}/build_report.log",
    script:
        "../scripts/build_report.py"
