# AWD: one job per lambda, each a warm-started continuation over the gamma grid.


rule distill:
    input:
        dataset="results/{domain}/data/dataset.npz",
        teacher="results/{domain}/teacher/teacher.pt",
    output:
        "results/{domain}/distill/lambda_{index}.json",
    params:
        cfg=stage_cfg("distill"),
        checkpoint="results/{domain}/distill/lambda_{index}.checkpoint.pt",
        code=stage_code("distill"),
        device=config["device"],
    threads: torch_threads
    resources:
        mem_mb=8000,
        runtime=240,
    log:
        "logs/{domain}/distill_{index}.log",
    benchmark:
        "results/{domain}/benchmarks/distill_{index}.tsv"
    conda:
        "../envs/awd.yaml"
    script:
        "../scripts/distill.py"
