from cnnlab.jobs import run_step
from cnnlab.preprocess import prepare
from cnnlab.tracking import redact

run_step(
    snakemake,
    lambda s: prepare(
        s.input.archive, s.output.arrays, s.output.stats, s.params.md5, **s.params.layout, source_url=redact(s.params.url)
    ),
)
