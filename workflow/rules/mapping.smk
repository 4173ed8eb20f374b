# Cross-validated ridge mapping: brain score R(X) and forecast scores F(d) = R(X + W_d) - R(X).
# fit_scores fits the subjects who heard the same stimulus sequence together (at most
# mapping.shared_subjects per job); subject_scores writes each subject's GIfTI maps per
# hemisphere, an .npz of every map and a tidy region table.


rule fit_scores:
    input:
        unpack(fit_scores_input),
    output:
        fit_output("{fit}"),
    params:
        config=lambda w: fit_config(w, "model", "features", "forecast", "mapping"),
        subjects=lambda w: FITS[w.fit],
        stories=lambda w: sorted(fit_runs(w.fit)["story"].unique()),
        basenames=lambda w: list(fit_runs(w.fit).drop_duplicates("basename")["basename"]),
    conda:
        "../envs/brainpred.yaml"
    log:
        f"logs/fit_scores/model-{MODEL}_layer-{LAYER}_{{fit}}.log",
    benchmark:
        f"benchmarks/out/fit_scores/model-{MODEL}_layer-{LAYER}_{{fit}}.tsv"
    # Sizes from the BOLD caches, the model's width and the config (vertices of the space,
    # #distances): the formula is in resources.smk. GPU: mapping.backend torch_cuda, or auto
    # where this machine has one.
    threads: MAPPING_THREADS
    resources:
        mem_mb=mapping_mem_mb,
        runtime=mapping_runtime,
        gpu=MAPPING_GPU,
    script:
        "../scripts/fit_scores.py"


rule subject_scores:
    input:
        fit=lambda w: fit_output(FIT_OF[w.subject]),
        labels=label_files(),
    output:
        **subject_outputs("{subject}"),
    conda:
        "../envs/brainpred.yaml"
    log:
        f"logs/subject_scores/model-{MODEL}_layer-{LAYER}_{{subject}}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/subject_scores.py"
