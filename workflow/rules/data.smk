# Raw data in: the domain's simulator writes mock files in the real layout, then one ingest
# path reads real or mock files into results/{domain}/data/dataset.npz. External data folders
# enter through their manifest (awd.manifest), so changed files rerun ingest.


rule simulate:
    output:
        directory("results/{domain}/raw"),
    params:
        cfg=stage_cfg("simulate"),
        code=stage_code("simulate"),
    threads: config["threads"]
    resources:
        mem_mb=4000,
        runtime=30,
    log:
        "logs/{domain}/simulate.log",
    benchmark:
        "results/{domain}/benchmarks/simulate.tsv"
    conda:
        "../envs/awd.yaml"
    script:
        "../scripts/simulate.py"


# one rule for the domains without extra ingest outputs, one per domain that declares some
for _domain, _extras in stage_variants("ingest"):

    rule:
        name:
            stage_rule_name("ingest", _domain)
        input:
            raw_input,
        output:
            dataset="results/{domain}/data/dataset.npz",
            extra=extra_outputs("results/{domain}/data", _extras),
        wildcard_constraints:
            domain=stage_domains("ingest", _domain),
        params:
            cfg=stage_cfg("ingest"),
            raw_dir=raw_dir,
            out_dir=subpath(output.dataset, parent=True),
            code=stage_code("ingest"),
        threads: config["threads"]
        resources:
            mem_mb=6000,
            runtime=60,
        log:
            "logs/{domain}/ingest.log",
        benchmark:
            "results/{domain}/benchmarks/ingest.tsv"
        conda:
            "../envs/awd.yaml"
        script:
            "../scripts/ingest.py"
