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
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1 if config["mapping"]["backend"] == "torch_cuda" else 0,
    script:
        "../scripts/subject_scores.py"
