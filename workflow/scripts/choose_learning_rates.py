from cnnlab.launch.jobs import run_step
from cnnlab.study.studies import load_study, variant_composer
from cnnlab.study.tuning import write_learning_rates

run_step(
    snakemake,
    lambda s: write_learning_rates(
        sweep := load_study(s.wildcards.study, s.params.conf_dir),
        s.input.results,
        variant_composer(sweep, s.params.conf_dir),
        s.output.rates,
    ),
)
