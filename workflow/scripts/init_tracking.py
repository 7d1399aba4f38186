from cnnlab.launch.jobs import run_step
from cnnlab.study.plan import write_plan
from cnnlab.study.studies import load_study
from cnnlab.tracking.study_setup import init_study_tracking
from cnnlab.tracking.uri import resolve_uri


def init(s):
    write_plan(load_study(s.wildcards.study, s.params.conf_dir), s.output.plan, s.params.conf_dir)
    return init_study_tracking(resolve_uri(), s.wildcards.study, s.params.artifact_root, s.input.stats, s.output.info)


run_step(snakemake, init)
