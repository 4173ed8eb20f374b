# Analyses beyond the main forecast curve (brainpred.analyses), each switched on by its config
# section: layers (forecast depth k*), controls (random / shuffled / generated windows, window
# widths) and syntax (syntactic vs semantic windows). Each analysis is fitted per subject group
# like fit_scores (analysis_fit), then summarised (analysis_group) and drawn (analysis_figures).

rule story_continuations:
    input:
        words=f"{RESULTS}/words/story-{{story}}_desc-words_table.tsv",
        text=f"{RESULTS}/words/story-{{story}}_desc-text.txt",
    output:
        continuations_file("{story}"),
    params:
        model=MODEL_SETTINGS,
        controls={"generated": _CONTROLS.get("generated", {}) or {}},
        layer=LAYER,
        horizon=lambda w: max(
            [1] + [int(d) for d in (_CONTROLS.get("distances") or config["forecast"]["distances"])]
        ),
    conda:
        "../envs/brainpred.yaml"
    log:
        f"logs/story_continuations/model-{MODEL}_story-{{story}}.log",
    benchmark:
        f"benchmarks/out/story_continuations/model-{MODEL}_story-{{story}}.tsv"
    threads: 1 if MODEL == "tiny-gpt2" else 4
    resources:
        mem_mb=2000 if MODEL == "tiny-gpt2" else 12000,
        runtime=20 if MODEL == "tiny-gpt2" else 240,
        gpu=uses_gpu(config["model"]["device"], "cuda"),
    script:
        "../scripts/story_continuations.py"


rule story_syntax:
    input:
        words=f"{RESULTS}/words/story-{{story}}_desc-words_table.tsv",
        text=f"{RESULTS}/words/story-{{story}}_desc-text.txt",
        corpus_words=[f"{RESULTS}/words/story-{s}_desc-words_table.tsv" for s in STORIES]
        if _SYNTAX.get("corpus", "stories") == "stories"
        else [],
        corpus_text=[f"{RESULTS}/words/story-{s}_desc-text.txt" for s in STORIES]
        if _SYNTAX.get("corpus", "stories") == "stories"
        else list(_SYNTAX.get("corpus") or []),
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
    threads: 1 if MODEL == "tiny-gpt2" else 4
    resources:
        mem_mb=3000 if MODEL == "tiny-gpt2" else 12000,
        runtime=30 if MODEL == "tiny-gpt2" else 480,
        gpu=uses_gpu(config["model"]["device"], "cuda"),
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
        corpus=lambda w, input: list(input.corpus) or _FINETUNE.get("corpus"),
    conda:
        "../envs/brainpred.yaml"
    log:
        f"logs/finetune_train/model-{MODEL}_alpha-{{alpha}}.log",
    benchmark:
        f"benchmarks/out/finetune_train/model-{MODEL}_alpha-{{alpha}}.tsv"
    # the checkpoints live in params.work_dir (not an output), so a killed job resumes there
    threads: 2 if MODEL == "tiny-gpt2" else 4
    resources:
        mem_mb=4000 if MODEL == "tiny-gpt2" else 24000,
        runtime=30 if MODEL == "tiny-gpt2" else 24 * 60,
        gpu=uses_gpu(config["model"]["device"], "cuda"),
    script:
        "../scripts/finetune_train.py"


rule finetune_features:
    input:
        manifest=lambda w: finetune_outputs(w.alpha)["manifest"],
        words=[f"{RESULTS}/words/story-{s}_desc-words_table.tsv" for s in STORIES],
        text=[f"{RESULTS}/words/story-{s}_desc-text.txt" for s in STORIES],
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
    threads: 1 if MODEL == "tiny-gpt2" else 4
    resources:
        mem_mb=2000 if MODEL == "tiny-gpt2" else 12000,
        runtime=(15 if MODEL == "tiny-gpt2" else 60) * max(1, len(STORIES) // 2),
        gpu=uses_gpu(config["model"]["device"], "cuda"),
    script:
        "../scripts/finetune_features.py"


rule analysis_fit:
    input:
        unpack(analysis_fit_input),
    output:
        analysis_fit_output("{analysis}", "{fit}"),
    params:
        config=lambda w: config_for("model", "features", "forecast", "mapping", w.analysis),
        subjects=lambda w: FITS[w.fit],
        stories=lambda w: sorted(fit_runs(w.fit)["story"].unique()),
        basenames=lambda w: list(fit_runs(w.fit).drop_duplicates("basename")["basename"]),
    conda:
        "../envs/brainpred.yaml"
    log:
        f"logs/analysis_fit/model-{MODEL}_layer-{LAYER}_{{analysis}}_{{fit}}.log",
    benchmark:
        f"benchmarks/out/analysis_fit/model-{MODEL}_layer-{LAYER}_{{analysis}}_{{fit}}.tsv"
    threads: 1 if SPACE == "fsaverage5" else 4
    resources:
        mem_mb=analysis_mem_mb,
        runtime=analysis_runtime,
        gpu=uses_gpu(config["mapping"]["backend"], "torch_cuda"),
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
            config=config_for("stats", "regions", _analysis),
            analysis=_analysis,
        conda:
            "../envs/brainpred.yaml"
        log:
            f"logs/analysis_group/model-{MODEL}_layer-{LAYER}_{_analysis}.log",
        benchmark:
            f"benchmarks/out/analysis_group/model-{MODEL}_layer-{LAYER}_{_analysis}.tsv"
        threads: 1
        resources:
            # every subject's condition maps in memory, float64, x3
            mem_mb=2000 + 3 * 8 * len(SUBJECTS) * 40 * N_VERTICES // 10**6,
            runtime=10 + len(SUBJECTS) // 10,
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
            config=config_for("dataset", "stats", "regions", _analysis),
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
