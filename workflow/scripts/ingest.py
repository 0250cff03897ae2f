"""Rule ingest: raw files (real or mock) -> results/{domain}/data/dataset.npz."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # noqa: F821 (the snakemake object)
from awd.pipeline import run_ingest, stage  # noqa: E402

sm = snakemake  # noqa: F821
with stage("ingest", sm.log[0], sm.threads, modules=sm.config["domain_modules"].values()):
    run_ingest(sm.wildcards.domain, sm.params.cfg, sm.params.raw_dir, sm.params.out_dir,
               sm.output.dataset, threads=sm.threads)
