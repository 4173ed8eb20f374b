# Group statistics across subjects: mean maps, Wilcoxon + FDR, 95% CIs, the d* map, the noise
# ceiling, and region tables (split Destrieux parcels, bilateral regions, key regions) of every
# score.


rule group:
    input:
        npz=[subject_outputs(s)["npz"] for s in SUBJECTS],
        ceiling=(
            [CEILING_OUTPUTS["npz"].format(subject=s) for s in SUBJECTS]
            if NOISE_CEILING
            else []
        ),
        **ATLAS_INPUTS,
    output:
        **GROUP_OUTPUTS,
    params:
        config=config_for("stats", "noise_ceiling", "regions"),
    conda:
        "../envs/brainpred.yaml"
    log:
        f"logs/group/model-{MODEL}_layer-{LAYER}.log",
    benchmark:
        f"benchmarks/out/group/model-{MODEL}_layer-{LAYER}.tsv"
    threads: 1
    resources:
        # every subject's maps in memory (resources.smk)
        mem_mb=GROUP_MEM_MB,
        runtime=GROUP_RUNTIME,
    script:
        "../scripts/group.py"
