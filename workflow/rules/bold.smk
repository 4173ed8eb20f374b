# BOLD: each run's GIfTI pair parsed once into a float32 .npy (n_trs x n_vertices, L then R),
# cropped to the run table's length.


rule bold_cache:
    input:
        left=lambda w: gifti(w.subject, w.basename, "L"),
        right=lambda w: gifti(w.subject, w.basename, "R"),
        table=f"{RESULTS}/tables/desc-runs_table.tsv",
    output:
        f"{RESULTS}/bold/{{subject}}/{{basename}}_space-{SPACE}_desc-clean_bold.npy",
    params:
        space=SPACE,
    conda:
        "../envs/brainpred.yaml"
    log:
        "logs/bold_cache/{subject}/{basename}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/bold_cache.py"
