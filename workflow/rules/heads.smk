# Interpretable heads on the learned wavelets, wavelet selection, the domain table and figures.


rule heads:
    input:
        dataset="results/{domain}/data/dataset.npz",
        teacher="results/{domain}/teacher/teacher.pt",
        grid=distill_results,
    output:
        table=report(
            "results/{domain}/table.csv",
            caption="../report/table.rst",
            category="{domain}",
            labels={"domain": "{domain}", "figure": "result table"},
        ),
        wavelet="results/{domain}/wavelet.json",
    params:
        cfg=domain_config,
        out_dir=subpath(output.table, parent=True),
        code=code_version,
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=60,
    log:
        "logs/{domain}/heads.log",
    benchmark:
        "results/{domain}/benchmarks/heads.tsv"
    conda:
        "../envs/awd.yaml"
    script:
        "../scripts/heads.py"


rule figures:
    input:
        table="results/{domain}/table.csv",
        wavelet="results/{domain}/wavelet.json",
        raw=raw_input,
    output:
        report(
            directory("results/{domain}/figures"),
            patterns=["{name}.png"],
            caption="../report/figure.rst",
            category="{domain}",
            labels={"domain": "{domain}", "figure": "{name}"},
        ),
    params:
        cfg=domain_config,
        raw_dir=raw_dir,
        results_dir=subpath(input.table, parent=True),
        code=code_version,
    resources:
        mem_mb=4000,
        runtime=20,
    log:
        "logs/{domain}/figures.log",
    conda:
        "../envs/awd.yaml"
    script:
        "../scripts/figures.py"
