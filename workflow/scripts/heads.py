"""Rule heads: interpretable heads on the learned wavelets; table.csv and wavelet.json."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # noqa: F821 (the snakemake object)
from awd.pipeline import run_heads, stage  # noqa: E402

sm = snakemake  # noqa: F821
with stage("heads", sm.log[0], sm.threads, modules=sm.config["domain_modules"].values()):
    run_heads(sm.wildcards.domain, sm.params.cfg, sm.input.dataset, sm.input.teacher,
              list(sm.input.grid), sm.params.out_dir, threads=sm.threads)
