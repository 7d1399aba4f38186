from cnnlab.launch.jobs import run_step
from cnnlab.report import build_report
from cnnlab.tracking.uri import resolve_uri

run_step(
    snakemake,
    lambda s: build_report(
        tracking_uri=resolve_uri(),
        study_name=s.wildcards.study,
        conf_dir=s.params.conf_dir,
        arrays_path=s.input.arrays,
        out_dir=s.output.html.rsplit("/", 1)[0],
    ),
)
