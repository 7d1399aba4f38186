# A sweep study's choice: per family, the value of the swept setting (the learning rate) with the
# best validation accuracy. Studies that name the sweep (tune_lr) train with it.
rule choose_learning_rates:
    input:
        results=study_results,
    output:
        rates=LEARNING_RATES,
    log:
        "logs/{study}/choose_learning_rates.log",
    conda:
        ENVIRONMENT
    params:
        conf_dir=CONF_DIR_PARAM,
    script:
        "../scripts/choose_learning_rates.py"
