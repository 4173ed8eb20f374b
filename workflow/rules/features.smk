# Language-model activations of every word of a story, for every layer, cached once per
# (model, story). Changing model.* settings re-runs this rule (they are params).


rule story_features:
    input:
        words=f"{RESULTS}/words/story-{{story}}_desc-words_table.tsv",
        text=f"{RESULTS}/words/story-{{story}}_desc-text.txt",
    output:
        f"{RESULTS}/features/model-{MODEL}/story-{{story}}_desc-activations.npz",
    params:
        model=config["model"],
    conda:
        "../envs/brainpred.yaml"
    log:
        f"logs/story_features/model-{MODEL}_story-{{story}}.log",
    benchmark:
        f"benchmarks/out/story_features/model-{MODEL}_story-{{story}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=1 if config["model"]["device"] == "cuda" else 0,
    script:
        "../scripts/story_features.py"
