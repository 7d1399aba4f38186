from cnnlab.jobs import run_step
from cnnlab.study import load_study
from cnnlab.tuning import write_learning_rates

run_step(
    snakemake,
    lambda s: write_learning_rates(
        load_study(s.wildcards.study, s.params.conf_dir), s.input.results, s.params.conf_dir, s.output.rates
    ),
)
