from cnnlab.data.download import public_url
from cnnlab.data.preprocess import prepare
from cnnlab.launch.jobs import run_step


def _prepare(s):
    layout, url = s.params.layout, public_url(s.params.url)  # the data set's profile keeps no credentials
    return prepare(s.input.archive, s.output.arrays, s.output.stats, s.params.md5, **layout, source_url=url)


run_step(snakemake, _prepare)
