from cnnlab.jobs import run_step
from cnnlab.tracking import init_study_tracking

run_step(
    snakemake,
    lambda s: init_study_tracking(
        s.params.uri, s.wildcards.study, s.params.artifact_root, s.input.stats, s.output.info
    ),
)
