from cnnlab.launch.jobs import run_step
from cnnlab.tracking.store import init_study_tracking, resolve_uri

run_step(
    snakemake,
    lambda s: init_study_tracking(
        resolve_uri(), s.wildcards.study, s.params.artifact_root, s.input.stats, s.output.info
    ),
)
