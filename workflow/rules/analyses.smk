# Analyses beyond the main forecast curve (brainpred.stages.analyses), each switched on by its
# config section: layers (forecast depth k*), controls (random / shuffled / generated windows,
# window widths) and syntax (syntactic vs semantic windows). Each analysis is fitted per subject group
# like fit_scores (analysis_fit), then summarised (analysis_group) and drawn (analysis_figures);
# models, variants (the paper's method beside the run's) and partition likewise. A job reads
# the config sections brainpred.conditions.job_sections names.

from brainpred.conditions import job_sections

rule story_continuations:
    input:
        words=words_file("{story}"),
        text=text_file("{story}"),
    output:
        continuations_file("{story}"),
    params:
        model=MODEL_SETTINGS,
        controls={"generated": config["controls"]["generated"]},
        layer=LAYER,
        # the farthest distance the controls use (controls.distances null = forecast.distances)
        horizon=lambda w: max(
            [1]
            + [int(d) for d in (config["controls"]["distances"] or config["forecast"]["distances"])]
        ),
    conda:
        "../envs/brainpred.yaml"
    log:
        f"logs/story_continuations/model-{MODEL}_story-{{story}}.log",
    benchmark:
        f"benchmarks/out/story_continuations/model-{MODEL}_story-{{story}}.tsv"
    threads: lm_threads("story_continuations")
    resources:
        **lm_resources("story_continuations"),
        gpu=LM_GPU,
    script:
        "../scripts/story_continuations.py"


rule story_syntax:
    input:
        words=words_file("{story}"),
        text=text_file("{story}"),
        corpus_words=[words_file(s) for s in STORIES]
        if config["syntax"]["corpus"] == "stories"
        else [],
        corpus_text=[text_file(s) for s in STORIES]
        if config["syntax"]["corpus"] == "stories"
        else list(config["syntax"]["corpus"]),
    output:
        syntax_file("{story}"),
    params:
        model=MODEL_SETTINGS,
        syntax=SYNTAX_FEATURE_SETTINGS,
    conda:
        "../envs/brainpred.yaml"
    log:
        f"logs/story_syntax/model-{MODEL}_story-{{story}}.log",
    benchmark:
        f"benchmarks/out/story_syntax/model-{MODEL}_story-{{story}}.tsv"
    threads: lm_threads("story_syntax")
    resources:
        **lm_resources("story_syntax"),
        gpu=LM_GPU,
    script:
        "../scripts/story_syntax.py"


rule finetune_train:
    input:
        corpus=finetune_corpus_files(),
    output:
        **finetune_outputs("{alpha}"),
    params:
        model=MODEL_SETTINGS,
        config=config_for("finetune"),
        work_dir=lambda w: f"{FT_DIR}/alpha-{w.alpha}/train",
        corpus=lambda w, input: list(input.corpus) or config["finetune"]["corpus"],
    conda:
        "../envs/brainpred.yaml"
    log:
        f"logs/finetune_train/model-{MODEL}_alpha-{{alpha}}.log",
    benchmark:
        f"benchmarks/out/finetune_train/model-{MODEL}_alpha-{{alpha}}.tsv"
    # the checkpoints live in params.work_dir (not an output), so a killed job resumes there
    threads: lm_threads("finetune_train")
    resources:
        **lm_resources("finetune_train"),
        gpu=LM_GPU,
    script:
        "../scripts/finetune_train.py"


rule finetune_features:
    input:
        manifest=lambda w: finetune_outputs(w.alpha)["manifest"],
        words=[words_file(s) for s in STORIES],
        text=[text_file(s) for s in STORIES],
    output:
        [f"{FT_DIR}/features/alpha-{{alpha}}_step-{{step}}/story-{s}_desc-activations.npz"
         for s in STORIES],
    params:
        model=MODEL_SETTINGS,
    conda:
        "../envs/brainpred.yaml"
    log:
        f"logs/finetune_features/model-{MODEL}_alpha-{{alpha}}_step-{{step}}.log",
    benchmark:
        f"benchmarks/out/finetune_features/model-{MODEL}_alpha-{{alpha}}_step-{{step}}.tsv"
    # one job per checkpoint: the model is loaded once for every story
    threads: lm_threads("finetune_features")
    resources:
        **lm_resources("finetune_features"),
        gpu=LM_GPU,
    script:
        "../scripts/finetune_features.py"


rule analysis_fit:
    input:
        unpack(analysis_fit_input),
    output:
        analysis_fit_output("{analysis}", "{fit}"),
    params:
        config=lambda w: fit_config(w, *job_sections(w.analysis, "fit")),
        subjects=lambda w: FITS[w.fit],
        stories=lambda w: sorted(fit_runs(w.fit)["story"].unique()),
        basenames=lambda w: list(fit_runs(w.fit).drop_duplicates("basename")["basename"]),
    conda:
        "../envs/brainpred.yaml"
    log:
        f"logs/analysis_fit/model-{MODEL}_layer-{LAYER}_{{analysis}}_{{fit}}.log",
    benchmark:
        f"benchmarks/out/analysis_fit/model-{MODEL}_layer-{LAYER}_{{analysis}}_{{fit}}.tsv"
    threads: MAPPING_THREADS
    resources:
        mem_mb=analysis_mem_mb,
        runtime=analysis_runtime,
        gpu=MAPPING_GPU,
    script:
        "../scripts/analysis_fit.py"


# analysis_group and analysis_figures have outputs that differ between analyses (the maps and
# figures each one draws), so one rule of each is defined per enabled analysis.
for _analysis in ANALYSES:

    rule:
        name:
            f"analysis_group_{_analysis}"
        input:
            fits=[analysis_fit_output(_analysis, f) for f in FITS],
            **ATLAS_INPUTS,
        output:
            **analysis_group_outputs(_analysis),
        params:
            config=config_for(*job_sections(_analysis, "group")),
            analysis=_analysis,
        conda:
            "../envs/brainpred.yaml"
        log:
            f"logs/analysis_group/model-{MODEL}_layer-{LAYER}_{_analysis}.log",
        benchmark:
            f"benchmarks/out/analysis_group/model-{MODEL}_layer-{LAYER}_{_analysis}.tsv"
        threads: 1
        resources:
            # every subject's condition maps in memory (resources.smk)
            mem_mb=ANALYSIS_GROUP_MEM_MB,
            runtime=GROUP_RUNTIME,
        script:
            "../scripts/analysis_group.py"

    rule:
        name:
            f"analysis_figures_{_analysis}"
        input:
            npz=analysis_group_outputs(_analysis)["npz"],
            regions=analysis_group_outputs(_analysis)["regions"],
            truth=(
                [f"{ROOT}/derivatives/synthetic-truth/ground_truth.json"]
                if config["dataset"]["source"] == "synthetic"
                else []
            ),
            loss=finetune_loss_files() if _analysis == "finetune" else [],
        output:
            **{
                k: report(v, category="Figures", subcategory=_analysis,
                          caption=f"../report/{k}.rst")
                for k, v in analysis_figure_files(_analysis).items()
            },
        params:
            config=config_for(*job_sections(_analysis, "figures")),
            analysis=_analysis,
        conda:
            "../envs/brainpred.yaml"
        log:
            f"logs/analysis_figures/model-{MODEL}_layer-{LAYER}_{_analysis}.log",
        threads: 1
        resources:
            mem_mb=4000,
            runtime=15,
        script:
            "../scripts/analysis_figures.py"
