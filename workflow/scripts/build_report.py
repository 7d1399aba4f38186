from cnnlab.jobs import run_step
from cnnlab.report import build_report

run_step(
    snakemake,
    lambda s: build_report(
        tracking_uri=s.params.uri,
        study_name=s.wildcards.study,
        conf_dir=s.params.conf_dir,
        arrays_path=s.input.arrays,
        out_dir=s.output.html.rsplit("/", 1)[0],
    ),
)
