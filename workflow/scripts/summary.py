"""Rule summary: all domains' tables beside the paper's numbers (CSV and Markdown)."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")  # noqa: F821 (the snakemake object)
from awd.pipeline import stage  # noqa: E402
from awd.summary import write_summary  # noqa: E402

sm = snakemake  # noqa: F821
with stage("summary", sm.log[0], 1, modules=sm.config["domain_modules"].values()):
    write_summary(dict(zip(sm.params.domains, sm.input.tables)), dict(zip(sm.params.domains, sm.params.configs)),
                  sm.output.csv, sm.output.md)
