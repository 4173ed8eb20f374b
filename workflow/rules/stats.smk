# Group statistics across subjects: mean maps, Wilcoxon + FDR, 95% CIs, the d* map.


rule group:
    input:
        npz=[subject_outputs(s)["npz"] for s in SUBJECTS],
        regions=[subject_outputs(s)["regions"] for s in SUBJECTS],
    output:
        npz=f"{GROUP}/group_desc-scores.npz",
        brain_L=f"{GROUP}/group_space-{SPACE}_hemi-L_desc-brainscore.func.gii",
        brain_R=f"{GROUP}/group_space-{SPACE}_hemi-R_desc-brainscore.func.gii",
        dstar_L=f"{GROUP}/group_space-{SPACE}_hemi-L_desc-dstar.func.gii",
        dstar_R=f"{GROUP}/group_space-{SPACE}_hemi-R_desc-dstar.func.gii",
        regions=f"{GROUP}/group_desc-regions_scores.tsv",
    params:
        config=config,
    conda:
        "../envs/brainpred.yaml"
    log:
        f"logs/group/model-{MODEL}_layer-{LAYER}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/group.py"
