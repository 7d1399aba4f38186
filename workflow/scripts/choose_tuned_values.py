from cnnlab.launch.jobs import run_step
from cnnlab.study.studies import load_study
from cnnlab.study.tuning import write_choices

run_step(
    snakemake,
    lambda s: write_choices(
        sweep := load_study(s.wildcards.study, s.params.conf_dir),
        load_study(sweep.parent, s.params.conf_dir),
        s.input.results,
        s.output.chosen,
    ),
)
