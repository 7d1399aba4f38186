# cnnlab: the MLP-versus-CNN study on CIFAR-10, from download to comparison report.
#
#   snakemake --cores all                                  # the study in workflow/config.yaml
#   snakemake --cores all --config study=quick             # another study from conf/study/
#   snakemake --cores all --config data_url=file:///path/cifar-10-binary.tar.gz data_md5=...
#
# What a study runs lives in conf/study/<name>.yaml; how one run trains lives in conf/ (Hydra).

from pathlib import Path


configfile: Path(workflow.basedir) / "workflow" / "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/tracking.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        rules.build_report.output.html.format(study=STUDY.name),
        rules.build_report.output.summary.format(study=STUDY.name),
    default_target: True
