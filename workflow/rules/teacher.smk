# The teacher network of each domain, trained on the train split and checkpointed per epoch.


rule teacher:
    input:
        dataset="results/{domain}/data/dataset.npz",
    output:
        model="results/{domain}/teacher/teacher.pt",
        metrics="results/{domain}/teacher/metrics.json",
    params:
        cfg=stage_cfg("teacher"),
        checkpoint="results/{domain}/teacher/checkpoint.pt",
        code=stage_code("teacher"),
        device=config["device"],
    threads: torch_threads
    resources:
        mem_mb=8000,
        runtime=120,
    log:
        "logs/{domain}/teacher.log",
    benchmark:
        "results/{domain}/benchmarks/teacher.tsv"
    conda:
        "../envs/awd.yaml"
    script:
        "../scripts/teacher.py"
