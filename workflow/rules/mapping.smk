# Cross-validated ridge mapping: brain score R(X) and forecast scores F(d) = R(X + W_d) - R(X)
# of each subject, as GIfTI maps per hemisphere, an .npz of every map and a tidy region table.


rule subject_scores:
    input:
        unpack(subject_scores_input),
    output:
        **subject_outputs("{subject}"),
    params:
        config=config,
        stories=lambda w: sorted(subject_runs(w.subject)["story"].unique()),
        basenames=lambda w: list(subject_runs(w.subject)["basename"].unique()),
    conda:
        "../envs/brainpred.yaml"
    log:
        f"logs/subject_scores/model-{MODEL}_layer-{LAYER}_{{subject}}.log",
    benchmark:
        f"benchmarks/out/subject_scores/model-{MODEL}_layer-{LAYER}_{{subject}}.tsv"
    # Sizes from the BOLD cache (input.bold: n_trs x n_vertices float32, so its size gives
    # n_trs) and the config (vertices of the space, #distances): docs/scaling.md. GPU:
    # mapping.backend torch_cuda, or auto where this machine has one.
    threads: 1 if SPACE == "fsaverage5" else 4
    resources:
        mem_mb=mapping_mem_mb,
        runtime=mapping_runtime,
        gpu=uses_gpu(config["mapping"]["backend"], "torch_cuda"),
    script:
        "../scripts/subject_scores.py"
