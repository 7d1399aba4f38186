# A tuning study's choice: per tuned variant, the value of its setting (a learning rate, a strength)
# with the best validation accuracy. The study it tunes (tuning.study) trains with it.
rule choose_tuned_values:
    input:
        results=study_results,
    output:
        chosen=TUNED_VALUES,
    log:
        "logs/{study}/choose_tuned_values.log",
    benchmark:
        "benchmarks/{study}/choose_tuned_values.tsv"
    conda:
        ENVIRONMENT
    params:
        conf_dir=CONF_DIR_PARAM,
    script:
        "../scripts/choose_tuned_values.py"
