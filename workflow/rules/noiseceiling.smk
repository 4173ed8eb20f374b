# Noise ceiling (method.md §1.7): per subject, the mean BOLD of the other subjects who heard the
# same stories predicts this subject's BOLD (per vertex, same FIR delays, ridge, folds and r as the
# brain score). Switch: noise_ceiling.enabled (config).

NOISE_CEILING = bool((config.get("noise_ceiling", {}) or {}).get("enabled", False))
CEILING = f"{RESULTS}/noiseceiling"


CEILING_OUTPUTS = {
    "npz": f"{CEILING}/{{subject}}/{{subject}}_desc-noiseceiling.npz",
    "ceiling_L": f"{CEILING}/{{subject}}/{{subject}}_space-{SPACE}_hemi-L_desc-noiseceiling.func.gii",
    "ceiling_R": f"{CEILING}/{{subject}}/{{subject}}_space-{SPACE}_hemi-R_desc-noiseceiling.func.gii",
}
# the subject's runs and every run of the same tasks (the other listeners), per subject
CEILING_RUNS = {
    s: PLAN[PLAN["task"].isin(set(subject_runs(s)["task"]))].drop_duplicates("basename")
    for s in SUBJECTS
}


rule noise_ceiling:
    input:
        table=f"{RESULTS}/tables/desc-runs_table.tsv",
        bold=lambda w: [
            f"{RESULTS}/bold/{s}/{b}_space-{SPACE}_desc-clean_bold.npy"
            for s, b in zip(
                CEILING_RUNS[w.subject]["subject"], CEILING_RUNS[w.subject]["basename"]
            )
        ],
    output:
        **CEILING_OUTPUTS,
    params:
        config=config,
        basenames=lambda w: list(CEILING_RUNS[w.subject]["basename"]),
    conda:
        "../envs/brainpred.yaml"
    log:
        "logs/noise_ceiling/{subject}.log",
    benchmark:
        "benchmarks/out/noise_ceiling/{subject}.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    script:
        "../scripts/noise_ceiling.py"
