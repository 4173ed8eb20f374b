# Language-model activations of every word of a story, for every layer, cached once per
# (model, story). Changing a model.* setting that changes the activations re-runs this rule
# (they are params); batch_size and device do not.


rule story_features:
    input:
        words=words_file("{story}"),
        text=text_file("{story}"),
        model=model_input(),
    output:
        features_file("{story}"),
    params:
        model=MODEL_SETTINGS,
    conda:
        "../envs/brainpred.yaml"
    log:
        f"logs/story_features/model-{MODEL}_story-{{story}}.log",
    benchmark:
        f"benchmarks/out/story_features/model-{MODEL}_story-{{story}}.tsv"
    # GPU: model.device cuda, or auto where this machine has one. Sizes: resources.smk.
    threads: lm_threads("story_features")
    resources:
        **lm_resources("story_features"),
        gpu=LM_GPU,
    script:
        "../scripts/story_features.py"


# The models analysis (config list `models`): each listed model's activations, one job per
# (model, story), named model_features_<label>; the entry that is model.name itself reuses
# story_features' caches. The other model settings (context, mode, dtype...) are model.*'s.
for _m in [m for m in MODEL_ENTRIES if not m["main"]]:

    rule:
        name:
            f"model_features_{_m['label']}"
        input:
            words=words_file("{story}"),
            text=text_file("{story}"),
            model=model_folder_input(_m["name"]),
        output:
            model_features_file(_m["label"], "{story}"),
        params:
            model=entry_model_config(MODEL_SETTINGS, _m),
            entry={"name": _m["name"], "seed": _m["seed"]},
        conda:
            "../envs/brainpred.yaml"
        log:
            f"logs/model_features/model-{_m['label']}_story-{{story}}.log",
        benchmark:
            f"benchmarks/out/model_features/model-{_m['label']}_story-{{story}}.tsv"
        # sized from the model's dims (resources.smk)
        threads: model_lm_threads(_m["name"])
        resources:
            **model_lm_resources(_m["name"]),
            gpu=LM_GPU,
        script:
            "../scripts/model_features.py"
