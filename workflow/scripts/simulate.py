"""Rule simulate: write the domain's mock raw data in the layout real data comes in."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # noqa: F821 (the snakemake object)
from awd.pipeline import run_simulate, stage  # noqa: E402

sm = snakemake  # noqa: F821
with stage("simulate", sm.log[0], sm.threads, modules=sm.config["domain_modules"].values()):
    run_simulate(sm.wildcards.domain, sm.params.cfg, sm.output[0], threads=sm.threads)
