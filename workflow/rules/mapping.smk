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
        # MB: imports + ~4 copies of the targets (z-scored Y, fold splits, target batches) + X and
        # the windows (n_trs x 768 x (1 + width x #distances) float32, twice: TR grid + PCA);
        # n_trs = BOLD bytes / (4 x vertices)
        mem_mb=lambda w, input: int(
            2000
            + 4 * sum(map(__import__("os").path.getsize, input.bold)) / 2**20
            + 2 * sum(map(__import__("os").path.getsize, input.bold))
            / (81924 if SPACE == "fsaverage6" else 20484)
            * 768 * (1 + config["forecast"].get("width", 7) * len(config["forecast"]["distances"]))
            / 2**20
        ),
        # minutes: 0.4 us of one core per TR x vertex x model (X + one per distance), x2 margin
        runtime=lambda w, input: int(
            10
            + 2 * 0.4e-6 / 60 * sum(map(__import__("os").path.getsize, input.bold)) / 4
            * (len(config["forecast"]["distances"]) + 1)
        ),
        gpu=int(config["mapping"]["backend"] == "torch_cuda"
                or (config["mapping"]["backend"] == "auto"
                    and bool(__import__("shutil").which("nvidia-smi")))),
    script:
        "../scripts/subject_scores.py"
