"""Rule provenance: resolved config, package versions, seeds and git revision beside the results."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # noqa: F821 (the snakemake object)
from awd.pipeline import stage  # noqa: E402
from awd.provenance import write_provenance  # noqa: E402

sm = snakemake  # noqa: F821
with stage("provenance", sm.log[0], 1, modules=sm.config["domain_modules"].values()):
    write_provenance(sm.output[0], dict(sm.params.config), sm.params.code, f"{sm.scriptdir}/../..",
                     hashes=dict(sm.params.hashes))
