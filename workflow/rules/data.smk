# Raw data in: the domain's simulator writes mock files in the real layout, then one ingest
# path reads real or mock files into results/{domain}/data/dataset.npz.


rule simulate:
    output:
        directory("results/{domain}/raw"),
    params:
        cfg=domain_config,
        code=code_version,
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


rule ingest:
    input:
        raw_input,
    output:
        dataset="results/{domain}/data/dataset.npz",
    params:
        cfg=domain_config,
        raw_dir=raw_dir,
        out_dir=subpath(output.dataset, parent=True),
        code=code_version,
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
