# BOLD: each run's GIfTI pair parsed once into a float32 .npy (n_trs x n_vertices, L then R),
# cropped to the run table's length, with a JSON sidecar recording what it was made from (the
# readers refuse a cache whose sidecar is missing or names another run).


rule bold_cache:
    input:
        left=lambda w: gifti(w.subject, w.basename, "L"),
        right=lambda w: gifti(w.subject, w.basename, "R"),
        table=f"{RESULTS}/tables/desc-runs_table.tsv",
    output:
        bold=bold_file("{subject}", "{basename}"),
        sidecar=bold_file("{subject}", "{basename}").removesuffix(".npy") + ".json",
    params:
        space=SPACE,
    conda:
        "../envs/brainpred.yaml"
    log:
        "logs/bold_cache/{subject}/{basename}.log",
    benchmark:
        "benchmarks/out/bold_cache/{subject}/{basename}.tsv"
    threads: 1
    resources:
        # peak ~ 3x the run's float32 array (GIfTI decode + stack + crop); the GIfTIs are about
        # as large as that array (base64, little compression): see docs/scaling.md
        mem_mb=lambda w, input: int(1000 + 3 * input.size_mb),
        runtime=lambda w, input: int(5 + input.size_mb / 100),
    script:
        "../scripts/bold_cache.py"
