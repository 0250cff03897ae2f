"""Rule teacher: train and checkpoint the domain's teacher network."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # noqa: F821 (the snakemake object)
from awd.pipeline import run_teacher, stage  # noqa: E402

sm = snakemake  # noqa: F821
with stage("teacher", sm.log[0], sm.threads, modules=sm.config["domain_modules"].values()):
    run_teacher(sm.wildcards.domain, sm.params.cfg, sm.input.dataset, sm.output.model,
                sm.output.metrics, checkpoint=sm.params.checkpoint, device=sm.params.device)
