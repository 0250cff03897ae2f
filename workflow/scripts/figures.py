"""Rule figures: the domain's figures as PNG files."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # noqa: F821 (the snakemake object)
from awd.pipeline import run_figures, stage  # noqa: E402

sm = snakemake  # noqa: F821
with stage("figures", sm.log[0], 1, modules=sm.config["domain_modules"].values()):
    run_figures(sm.wildcards.domain, sm.params.cfg, sm.params.results_dir, sm.params.raw_dir,
                sm.output[0])
