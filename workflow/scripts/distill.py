"""Rule distill: AWD for one lambda, warm-started along the gamma grid."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # noqa: F821 (the snakemake object)
from awd.pipeline import run_distill, stage  # noqa: E402

sm = snakemake  # noqa: F821
with stage(f"distill[{sm.wildcards.index}]", sm.log[0], sm.threads, modules=sm.config["domain_modules"].values()):
    run_distill(sm.wildcards.domain, sm.params.cfg, sm.input.dataset, sm.input.teacher,
                int(sm.wildcards.index), sm.output[0], checkpoint=sm.params.checkpoint,
                device=sm.params.device)
