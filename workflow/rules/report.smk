# Figures (PNG, also registered for `snakemake --report`) and the self-contained HTML report.


rule figures:
    input:
        npz=f"{GROUP}/group_desc-scores.npz",
        regions=f"{GROUP}/group_desc-regions_scores.tsv",
        truth=(
            [f"{ROOT}/derivatives/synthetic-truth/ground_truth.json"]
            if config["dataset"]["source"] == "synthetic"
            else []
        ),
    output:
        **{
            k: report(v, category="Figures", caption="../report/figures.rst")
            for k, v in FIGURE_FILES.items()
        },
    params:
        config=config,
    conda:
        "../envs/brainpred.yaml"
    log:
        f"logs/figures/model-{MODEL}_layer-{LAYER}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/figures.py"


rule report:
    input:
        **FIGURE_FILES,
        table=f"{RESULTS}/tables/desc-runs_table.tsv",
        regions=f"{GROUP}/group_desc-regions_scores.tsv",
    output:
        f"{RESULTS}/report.html",
    params:
        config=config,
    conda:
        "../envs/brainpred.yaml"
    log:
        "logs/report.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    script:
        "../scripts/report.py"
