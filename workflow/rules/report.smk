# Figures (PNG, also registered for `snakemake --report`, one caption per figure under
# workflow/report/) and the self-contained HTML report (with its interactive map viewer).


report: "../report/workflow.rst"


rule effective_config:
    output:
        EFFECTIVE_CONFIG,
    params:
        # the result-changing keys: a runtime-only edit (batch size, device...) reruns nothing;
        # the script writes the whole config
        config=config_for(*config),
    conda:
        "../envs/brainpred.yaml"
    log:
        "logs/effective_config.log",
    localrule: True
    threads: 1
    resources:
        mem_mb=500,
        runtime=2,
    script:
        "../scripts/effective_config.py"


rule paper_comparison:
    input:
        npz=f"{GROUP}/group_desc-scores.npz",
        scores=f"{GROUP}/group_desc-regions_scores.tsv",
        stats=f"{GROUP}/group_desc-regions_stats.tsv",
        **{
            f"analysis_{a}": analysis_group_outputs(a)["regions"]
            for a in ANALYSES
            if a in ("layers", "syntax", "finetune", "variants")
        },
    output:
        PAPER_COMPARISON,
    params:
        config=config_for("model", "features", "forecast", "stats", "noise_ceiling",
                          "layers", "syntax", "finetune", "report", "nuisance"),
    conda:
        "../envs/brainpred.yaml"
    log:
        f"logs/paper_comparison/model-{MODEL}_layer-{LAYER}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    script:
        "../scripts/paper_comparison.py"


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
            k: report(v, category="Figures", caption=f"../report/{k}.rst")
            for k, v in FIGURE_FILES.items()
        },
    params:
        config=config_for("dataset", "stats", "regions", "noise_ceiling"),
    conda:
        "../envs/brainpred.yaml"
    log:
        f"logs/figures/model-{MODEL}_layer-{LAYER}.log",
    benchmark:
        f"benchmarks/out/figures/model-{MODEL}_layer-{LAYER}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=15,
    script:
        "../scripts/figures.py"


rule report:
    input:
        **FIGURE_FILES,
        **{k: v for a in ANALYSES for k, v in analysis_figure_files(a).items()},
        analysis_regions=[analysis_group_outputs(a)["regions_stats"] for a in ANALYSES],
        table=RUN_TABLE,
        regions=f"{GROUP}/group_desc-regions_stats.tsv",
        config=EFFECTIVE_CONFIG,
        comparison=PAPER_COMPARISON,
        # the group maps of the report's interactive viewer
        npz=f"{GROUP}/group_desc-scores.npz",
        **({"models_comparison": analysis_group_outputs("models")["comparison"]}
           if "models" in ANALYSES else {}),
    output:
        report(
            REPORT,
            category="brainpred report",
            caption="../report/report_html.rst",
        ),
    params:
        config=config_for("dataset", "report"),
    conda:
        "../envs/brainpred.yaml"
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/out/report.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    script:
        "../scripts/report.py"
