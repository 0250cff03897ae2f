# awd-workbench: Adaptive Wavelet Distillation from raw data to the paper's tables and figures.
#
#   snakemake --cores all                                   # embedded default (mock/simulated data)
#   snakemake --cores all --configfile workflow/config/paper.yaml
#   snakemake --report results/report.html                  # self-contained report
#
# Every domain runs the same stages (simulate -> ingest -> teacher -> distill -> heads ->
# figures); the domain-specific work is reached through the registry in awd/domain.py.
from snakemake.utils import min_version

min_version("9.19")


configfile: f"{workflow.basedir}/workflow/config/default.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/heads.smk"
include: "workflow/rules/summary.smk"


for _extra_rules in domain_rule_files():

    include: _extra_rules


onerror:
    announce_failure(log)


rule all:
    default_target: True
    input:
        final_outputs(),
