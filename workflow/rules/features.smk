# Language-model activations of every word of a story, for every layer, cached once per
# (model, story). Changing a model.* setting that changes the activations re-runs this rule
# (they are params); batch_size and device do not.


rule story_features:
    input:
        words=f"{RESULTS}/words/story-{{story}}_desc-words_table.tsv",
        text=f"{RESULTS}/words/story-{{story}}_desc-text.txt",
        model=model_input(),
    output:
        f"{RESULTS}/features/model-{MODEL}/story-{{story}}_desc-activations.npz",
    params:
        model=MODEL_SETTINGS,
    conda:
        "../envs/brainpred.yaml"
    log:
        f"logs/story_features/model-{MODEL}_story-{{story}}.log",
    benchmark:
        f"benchmarks/out/story_features/model-{MODEL}_story-{{story}}.tsv"
    # GPU: model.device cuda, or auto where this machine has one (nvidia-smi on the PATH; on
    # a cluster set device: cuda, or let profiles/slurm ask for it). Sizes: docs/scaling.md.
    threads: 1 if MODEL == "tiny-gpt2" else 4
    resources:
        mem_mb=2000 if MODEL == "tiny-gpt2" else 12000,
        runtime=15 if MODEL == "tiny-gpt2" else 60,
        gpu=uses_gpu(config["model"]["device"], "cuda"),
    script:
        "../scripts/story_features.py"
