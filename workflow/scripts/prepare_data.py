from cnnlab.jobs import run_step
from cnnlab.preprocess import prepare

run_step(
    snakemake,
    lambda s: prepare(s.input.archive, s.output.arrays, s.output.stats, s.params.md5, **s.params.layout),
)
