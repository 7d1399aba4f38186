from cnnlab.download import fetch_archive
from cnnlab.jobs import run_step

run_step(snakemake, lambda s: fetch_archive(s.params.url, s.params.md5, s.output.archive))
