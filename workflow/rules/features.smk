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
