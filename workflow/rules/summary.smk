# Paper-style summary of all domains next to the published numbers, and provenance.
# Both are bookkeeping: on a cluster they run on the submit host.


localrules:
    summary,
    provenance,


rule summary:
    input:
        tables=expand("results/{domain}/table.csv", domain=DOMAINS),
    output:
        csv=report(
            "results/tables/summary.csv",
            caption="../report/summary.rst",
            category="Summary",
            labels={"table": "summary (csv)"},
        ),
        md="results/tables/summary.md",
    params:
        domains=DOMAINS,
        configs=[{"data": summary_data(d)} for d in DOMAINS],
    resources:
        mem_mb=1000,
        runtime=5,
    log:
        "logs/summary.log",
    conda:
        "../envs/awd.yaml"
    script:
        "../scripts/summary.py"


rule provenance:
    input:
        tables=expand("results/{domain}/table.csv", domain=DOMAINS),
    output:
        "results/provenance.json",
    params:
        config=config,
        code=_LIB_HASH,
        hashes=provenance_hashes(),
    resources:
        mem_mb=1000,
        runtime=5,
    log:
        "logs/provenance.log",
    conda:
        "../envs/awd.yaml"
    script:
        "../scripts/provenance.py"
