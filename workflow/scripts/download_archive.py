from cnnlab.data.download import fetch_archive, url_to_fetch
from cnnlab.launch.jobs import run_step

run_step(snakemake, lambda s: fetch_archive(url_to_fetch(s.params.url), s.params.md5, s.output.archive))
