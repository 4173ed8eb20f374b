# BOLD: each run's GIfTI pair parsed once into a float32 .npy (n_trs x n_vertices, L then R),
# cropped to the run table's length, with a JSON sidecar recording what it was made from (the
# readers refuse a cache whose sidecar is missing or names another run).


rule bold_cache:
    input:
        left=lambda w: gifti(w.subject, w.basename, "L"),
        right=lambda w: gifti(w.subject, w.basename, "R"),
        # the table of the subject's fit, not of the whole selection (plan.smk: fit_table)
        table=lambda w: fit_table(FIT_OF[w.subject]),
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
        # from the GIfTIs' size (resources.smk)
        mem_mb=bold_cache_mem_mb,
        runtime=bold_cache_runtime,
    script:
        "../scripts/bold_cache.py"
