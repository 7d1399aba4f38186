from cnnlab.data.download import fetch_archive
from cnnlab.launch.jobs import run_step

run_step(snakemake, lambda s: fetch_archive(s.params.url, s.params.md5, s.output.archive))
