from cnnlab.launch.jobs import run_step
from cnnlab.tracking.study_setup import init_study_tracking
from cnnlab.tracking.uri import resolve_uri

run_step(
    snakemake,
    lambda s: init_study_tracking(
        resolve_uri(), s.wildcards.study, s.params.artifact_root, s.input.stats, s.output.info
    ),
)
