# Interpretable heads on the learned wavelets, wavelet selection, the domain table and figures.

# one rule for the domains without extra heads outputs, one per domain that declares some
for _domain, _extras in stage_variants("heads"):

    rule:
        name:
            stage_rule_name("heads", _domain)
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
            extra=extra_outputs("results/{domain}", _extras),
        wildcard_constraints:
            domain=stage_domains("heads", _domain),
        params:
            cfg=stage_cfg("heads"),
            out_dir=subpath(output.table, parent=True),
            code=stage_code("heads"),
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
        cfg=stage_cfg("figures"),
        raw_dir=raw_dir,
        results_dir=subpath(input.table, parent=True),
        code=stage_code("figures"),
    resources:
        mem_mb=4000,
        runtime=20,
    log:
        "logs/{domain}/figures.log",
    conda:
        "../envs/awd.yaml"
    script:
        "../scripts/figures.py"
