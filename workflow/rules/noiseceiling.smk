# Noise ceiling (method.md §1.7): per subject, the mean BOLD of the other subjects who heard the
# same audio (all its conditions pooled) predicts this subject's BOLD (per vertex, same FIR delays,
# ridge, folds and r as the brain score). Switch: noise_ceiling.enabled (config). listener_sums
# adds up every listener of a task once, per audio file, and writes how many it pooled
# (desc-listeners_table.tsv); each noise_ceiling job subtracts its own run from the sum (linear,
# not quadratic, in the listeners of an audio) and reads no other subject's BOLD.


rule listener_sums:
    input:
        table=lambda w: task_table(w.task),
        bold=lambda w: [
            bold_file(s, b) for s, b in zip(TASK_RUNS[w.task]["subject"], TASK_RUNS[w.task]["basename"])
        ],
    output:
        sums=listener_sum_file("{task}"),
        table=listener_table_file("{task}"),
    params:
        config=config_for("mapping", "noise_ceiling"),
        basenames=lambda w: list(TASK_RUNS[w.task]["basename"]),
    conda:
        "../envs/brainpred.yaml"
    log:
        "logs/listener_sums/{task}.log",
    benchmark:
        "benchmarks/out/listener_sums/{task}.tsv"
    threads: 1
    resources:
        # one run at a time plus the float64 sum and count (resources.smk)
        mem_mb=listener_sums_mem_mb,
        runtime=listener_sums_runtime,
    script:
        "../scripts/listener_sums.py"


rule noise_ceiling:
    input:
        table=lambda w: [task_table(t) for t in sorted(subject_runs(w.subject)["task"].unique())],
        bold=lambda w: [bold_file(w.subject, b) for b in subject_runs(w.subject)["basename"].unique()],
        sums=lambda w: [listener_sum_file(t) for t in sorted(subject_runs(w.subject)["task"].unique())],
    output:
        **CEILING_OUTPUTS,
    params:
        config=config_for("mapping", "noise_ceiling"),
        basenames=lambda w: list(subject_runs(w.subject)["basename"].unique()),
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
